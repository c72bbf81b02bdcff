"""A process that sends webhook deliveries, for the webhook tests:
``python -m tests.procs.deliver STORE READY_FILE``. It starts a Deliverer with quick polls,
creates READY_FILE, and runs until stdin closes."""

from __future__ import annotations

import sys
from pathlib import Path

from batchyard.deliveries import Backoff
from batchyard.store import open_store
from batchyard.webhooks import DeliveryConfig, start_deliveries


def main() -> None:
    store = open_store(sys.argv[1])
    stop = start_deliveries(store, DeliveryConfig(poll=0.005, backoff=Backoff(base=0.05, cap=0.1)))
    Path(sys.argv[2]).touch()
    sys.stdin.read()
    stop()
    store.close()


if __name__ == "__main__":
    main()
