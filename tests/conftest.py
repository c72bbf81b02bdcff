from __future__ import annotations

import compileall
import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import batchyard
from batchyard import Yard


def pytest_configure(config: pytest.Config) -> None:
    """Compile batchyard and tests/ to bytecode once, before any test (in the process that
    runs the session, not in each pytest-xdist worker). The suite starts a thousand Python
    processes (the CLI, workers, servers), and where PYTHONDONTWRITEBYTECODE is set, as in
    many CI images, none of them keeps the bytecode it compiles: each compiled batchyard
    afresh, about 0.15 s of CPU, half of what a short CLI command costs. (Up-to-date files
    are skipped: a second run spends some milliseconds here.)"""
    if hasattr(config, "workerinput"):
        return
    for folder in (Path(batchyard.__file__).parent, Path(__file__).parent):
        compileall.compile_dir(folder, quiet=2)


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    """A Yard on a fresh SQLite file."""
    with Yard(f"sqlite:///{tmp_path / 'yard.db'}") as y:
        yield y


#: Worker settings that make tests quick: short polls, prompt control checks.
FAST = {"poll_interval": 0.02, "control_interval": 0.02, "flush_interval": 0.005}


def _run_folder(factory: pytest.TempPathFactory) -> Path:
    """A folder of this pytest run, shared by its pytest-xdist workers (each has a basetemp
    of its own inside it)."""
    base = factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


@contextmanager
def shared_folder(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder ``name`` of this run, the same for all its workers, held under a lock: the
    first worker to get it builds what it holds, the others find it built. For read-only
    data that takes long to make."""
    run = _run_folder(factory)
    with open(run / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = run / name
        folder.mkdir(exist_ok=True)
        yield folder


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Under pytest-xdist (``-n``), a test marked ``alone`` runs while no other test of the
    run does: it restarts PostgreSQL, or counts the server's connections. Every other test
    holds a shared lock on a file of the run; an ``alone`` test holds it exclusively. A
    turnstile taken on the way in keeps the shared holders from starving it. The lock is
    taken outside pytest-timeout's clock: waiting for it is not the test's time."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    run = Path(item.config.option.basetemp).parent  # the worker's basetemp is inside it
    alone = item.get_closest_marker("alone") is not None
    with ExitStack() as held:
        turnstile = held.enter_context(open(run / "alone.turnstile", "a"))
        room = held.enter_context(open(run / "alone.room", "a"))
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)
