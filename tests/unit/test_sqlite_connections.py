"""The SQLite store's connections, one per thread: closing the store from one thread while
another thread is in the middle of a statement."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

#: Run in a child process: a crash there fails this test instead of killing the runner.
_RACE = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from batchyard.errors import StoreError
    from batchyard.store.sqlite import SqliteStore

    LONG = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
        "SELECT SUM(x) FROM c"
    )
    refused = 0
    for n in range(30):
        store = SqliteStore(Path(sys.argv[1]) / f"{n}.db")
        reading = threading.Event()
        errors = []

        def reader():
            while True:
                try:
                    store._read(LONG)
                except StoreError as exc:
                    errors.append(exc)
                    return
                reading.set()

        thread = threading.Thread(target=reader)
        thread.start()
        reading.wait()
        store.close()  # while the reader is (most likely) in the middle of its statement
        thread.join()
        refused += len(errors)
    print(refused)
    """
)


def test_closing_the_store_waits_for_a_statement_another_thread_is_running(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RACE, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    # Before, closing the connection under a running statement crashed the process (-11).
    assert done.returncode == 0, done.stderr[-2000:]
    # Every reader then got a clear error on its next statement: the store is closed.
    assert done.stdout.split() == ["30"]
