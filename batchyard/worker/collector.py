"""The garbage collector while workers run: its young generation made larger, for the whole
process, from the first worker's start to the last one's end.

A worker allocates a dozen container objects per item (the claim, the job, its context, the
outcome, coroutines) and holds a thousand items' worth at once. With CPython's default
threshold (700 allocations) the collector runs every fifty items, promotes every item in
flight to the older generations, and so keeps rescanning them and the rest of the heap:
about a third of the event loop's time per no-op item (5.2 us with it, 3.6 us without,
measured), more in a process with a big heap. None of those objects form cycles: the
collections find nothing to free. A threshold of 10,000 makes them rare; cycles made
meanwhile (by the rest of the process) are still freed, a little later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The young generation's threshold while any worker runs (CPython's default is 700).
YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_running = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def larger_young_generation() -> Iterator[None]:
    """Raise the collector's young threshold to YOUNG_THRESHOLD (never lower it) while in
    this block; the thresholds as they were come back when the last such block ends (workers
    running at once on several threads share one setting)."""
    global _running, _saved
    with _lock:
        if _running == 0:
            _saved = gc.get_threshold()
            young, *older = _saved
            if young < YOUNG_THRESHOLD:
                gc.set_threshold(YOUNG_THRESHOLD, *older)
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _saved is not None:
                # NOTE: as we found them, unless someone changed them meanwhile: theirs stay.
                if gc.get_threshold()[0] == max(_saved[0], YOUNG_THRESHOLD):
                    gc.set_threshold(*_saved)
                _saved = None
