"""A warm ``batchyard worker`` for the llm process tests:
``python -m tests.procs.llm_worker URL MODEL READY GO [WORKER OPTIONS...]``.

It first does what a cold process does on its first llm call (imports the task and its HTTP
client, loads MODEL's tokenizer: about half a second of CPU), then creates the file READY and
waits for the file GO, which holds a batch id. Then it is the ``batchyard worker`` command
(``batchyard --db URL -v worker --batch ID --until-idle WORKER OPTIONS``), run in this process,
and exits with its status.

Why warm: the tests compress a provider's 60 s window to a few seconds, and a window-safe
limit leaves calls a sixtieth of the window (0.1 s for 6 s) to travel from their admission to
the provider. Four processes starting cold at once on a small shared machine delay their first
calls by more than that; at 60 s windows (1 s of room) they would not matter.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# The task, its HTTP client and its template engine: imported before READY, as the warm-up.
import batchyard.llm.task  # noqa: F401
from batchyard.cli import main as cli_main
from batchyard.llm.tokens import count_message_tokens

#: How long to wait for GO before giving up.
GO_TIMEOUT = 60.0


def main() -> int:
    url, model, ready, go, *options = sys.argv[1:]
    count_message_tokens([{"role": "user", "content": "warm up"}], model)
    Path(ready).touch()
    deadline = time.monotonic() + GO_TIMEOUT
    while not Path(go).exists() or not (batch_id := Path(go).read_text().strip()):
        if time.monotonic() > deadline:
            print(f"no batch id in {go} after {GO_TIMEOUT:g}s", file=sys.stderr)
            return 2
        time.sleep(0.01)
    argv = ["--db", url, "-v", "worker", "--batch", batch_id, "--until-idle", *options]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
