"""A worker process for the process tests: ``python -m tests.procs.worker STORE [options]``,
where STORE is a store URL (``sqlite:///...``, ``postgresql://...``) or a SQLite file path.

It runs until idle (or, with ``--forever``, until SIGTERM) and prints its WorkerStats as one
JSON line on stdout when it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from batchyard import Yard


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", help="a store URL, or the path of a SQLite file")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--worker-id")
    parser.add_argument("--task", action="append", help="run only these tasks (repeatable)")
    parser.add_argument("--forever", action="store_true", help="work until SIGTERM")
    parser.add_argument(
        "--ready", help="a file to write once the store is open: the monotonic time then"
    )
    args = parser.parse_args()
    options = {
        "lease": args.lease,
        "concurrency": args.concurrency,
        "poll_interval": args.poll,
        "grace": args.grace,
    }
    if args.worker_id:
        options["worker_id"] = args.worker_id
    if args.task:
        options["tasks"] = tuple(args.task)
    url = args.store if "://" in args.store else f"sqlite:///{args.store}"
    with Yard(url) as yard:
        if args.ready:
            Path(args.ready).write_text(repr(time.monotonic()))
        stats = yard.work(**options) if args.forever else yard.run_until_idle(**options)
    print(json.dumps(dataclasses.asdict(stats)), flush=True)


if __name__ == "__main__":
    main()
