"""Running a worker under SIGINT and SIGTERM: the first signal stops claiming and lets
running items finish within ``grace``, a second stops at once. POSIX installs handlers on
the loop, Windows with ``signal.signal``; off the main thread none are installed."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from batchyard.worker import Worker, WorkerStats

log = logging.getLogger("batchyard")


async def serve_with_signals(worker: Worker, until_idle: bool) -> WorkerStats:
    """``worker.run(until_idle=...)`` with the signal handlers installed for its run."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]

    def on_signal() -> None:
        if worker.stopping:
            log.warning("stopping now; unfinished items go back to the queue")
            worker.stop(immediately=True)
        else:
            log.warning(
                "stopping: running items get %ss to finish (signal again to stop now)",
                worker.config.grace,
            )
            worker.stop()

    installed: list[signal.Signals] = []
    for sig in signals:
        try:
            if sys.platform == "win32":
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(on_signal))
            else:
                loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread, or no such signal here: run without handlers
    try:
        return await worker.run(until_idle=until_idle)
    finally:
        for sig in installed:
            if sys.platform == "win32":
                signal.signal(sig, signal.SIG_DFL)
            else:
                loop.remove_signal_handler(sig)
