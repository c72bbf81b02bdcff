"""The public surface: bad input is refused whole, with its position; names are exported."""

from __future__ import annotations

import gc
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchyard
from batchyard import (
    BatchNotFound,
    BatchyardError,
    ConfigError,
    Conflict,
    DuplicateKey,
    InputError,
    InvalidItem,
    ItemNotFound,
    NotSerializable,
    RetryPolicy,
    TaskNotImportable,
    TaskNotRegistered,
    Yard,
)
from batchyard.errors import Fail, Retry
from batchyard.store import SqliteStore, open_store
from batchyard.tasks import unimportable


async def noop(item: dict[str, Any]) -> None:
    return None


def assert_nothing_written(yard: Yard) -> None:
    assert yard.batches().rows == []
    assert yard.store.cursor() == 0


def test_public_names_are_exported() -> None:
    for name in batchyard.__all__:
        assert hasattr(batchyard, name), name
    assert {"Yard", "task", "Batch", "BatchState", "ItemState", "Retry", "Fail"} <= set(
        batchyard.__all__
    )
    assert issubclass(TaskNotRegistered, BatchyardError)


@pytest.mark.parametrize(
    ("items", "error", "words"),
    [
        ([{"a": 1}, "text", {"a": 2}], InvalidItem, "item 2: an item must be a JSON object"),
        ([{"id": "x"}, {"id": "y"}, {"id": "x"}], DuplicateKey, "item 3, key 'x': duplicate"),
        ([{"v": math.nan}], NotSerializable, "item 1, key '1': the item is not JSON"),
        ([{"v": {1, 2}}], NotSerializable, "item 1"),
        ([{"id": [1]}], InvalidItem, "field 'id' must be a string or an integer"),
        ([], InputError, "no items"),
    ],
)
def test_bad_items_are_refused_whole(
    tmp_path: Path, items: list[Any], error: type[Exception], words: str
) -> None:
    with Yard(tmp_path / "y.db") as yard:
        with pytest.raises(error, match=words.replace("(", r"\(")):
            yard.submit(noop, items)
        assert_nothing_written(yard)


def test_a_duplicate_far_into_a_large_submission_leaves_no_batch(tmp_path: Path) -> None:
    def rows() -> Iterator[dict[str, Any]]:
        for n in range(12_000):
            yield {"id": n}
        yield {"id": 7}

    with Yard(tmp_path / "y.db") as yard:
        with pytest.raises(DuplicateKey) as caught:
            yard.submit(noop, rows())
        assert caught.value.position == 12_001 and caught.value.key == "7"
        assert "first used by item 8" in str(caught.value)
        assert yard.batches().rows == []
        assert yard.store.events() == []


def test_an_exception_while_reading_items_leaves_no_batch(tmp_path: Path) -> None:
    def rows() -> Iterator[dict[str, Any]]:
        yield from ({"n": n} for n in range(9_000))
        raise OSError("disk went away")

    with Yard(tmp_path / "y.db") as yard:
        with pytest.raises(OSError, match="disk went away"):
            yard.submit(noop, rows())
        assert yard.batches().rows == []


def test_unknown_tasks_and_bad_options_are_config_errors(yard: Yard) -> None:
    with pytest.raises(TaskNotRegistered, match="unknown task 'nope'"):
        yard.submit("nope", [{"a": 1}])
    with pytest.raises(TaskNotRegistered, match="cannot import module 'no_such_mod'"):
        yard.submit("no_such_mod:fn", [{"a": 1}])
    with pytest.raises(TaskNotRegistered, match="has no 'missing'"):
        yard.submit("json:missing", [{"a": 1}])
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        yard.submit(noop, [{"a": 1}], concurrency=0)
    with pytest.raises(ConfigError, match="timeout must be positive"):
        yard.submit(noop, [{"a": 1}], timeout=-1)
    with pytest.raises(InputError, match="not a single dict"):
        yard.submit(noop, {"a": 1})
    with pytest.raises(ConfigError, match="unknown scheme 'mysql'"):
        open_store("mysql://x")
    assert_nothing_written(yard)


def test_a_task_no_worker_could_import_is_refused_unless_registered(yard: Yard) -> None:
    def nested(item: dict[str, Any]) -> int:
        return 1

    with pytest.raises(TaskNotImportable, match=r"a lambda has no name a worker can import"):
        yard.submit(lambda item: 1, [{"a": 1}])
    with pytest.raises(TaskNotImportable, match=r"<locals>.nested cannot be run by a worker"):
        yard.submit(nested, [{"a": 1}])
    with pytest.raises(TaskNotImportable, match=r"register it on this Yard \(@yard.task\)"):
        yard.submit(batchyard.task(nested), [{"a": 1}])  # marked, but not registered
    with pytest.raises(TaskNotRegistered, match=r"function of the script a\.py"):
        yard.submit("a.py:main", [{"a": 1}])  # never imported: that would run a.py
    assert_nothing_written(yard)
    # Registered on this Yard, to be run in this process: accepted.
    assert yard.submit(yard.task(nested), [{"a": 1}]).status().task.endswith("<locals>.nested")


def test_names_no_worker_may_import_are_told_from_the_name_alone() -> None:
    assert unimportable("tasks:enrich") is None and unimportable("llm") is None
    assert "lambda" in (unimportable("tasks:<lambda>") or "")
    assert "inside another function" in (unimportable("tasks:outer.<locals>.f") or "")
    assert "script a.py" in (unimportable("a.py:f") or "")
    assert "script __main__" in (unimportable("__main__:f") or "")


def test_a_module_imported_for_a_worker_may_not_submit_as_it_loads(yard: Yard) -> None:
    def submit_at_import() -> None:
        yard.submit(noop, [{"a": 1}])

    with pytest.raises(ConfigError, match=r"imported by a worker to find task m:f, submits"):
        _as_worker_import("m:f", submit_at_import)
    assert_nothing_written(yard)


def _as_worker_import(name: str, body: Any) -> None:
    """Run ``body`` as if a worker's import of task ``name`` ran it."""
    from batchyard import tasks

    tasks._worker_import.name = name
    try:
        body()
    finally:
        tasks._worker_import.name = None


def test_lookups_of_missing_things_name_them(yard: Yard) -> None:
    with pytest.raises(BatchNotFound, match="no batch 'batch_1_deadbeef'"):
        yard.batch("batch_1_deadbeef")
    batch = yard.submit(noop, [{"id": "a"}])
    with pytest.raises(ItemNotFound, match="no item with key 'zz'"):
        batch.item("zz")
    with pytest.raises(Conflict, match="cancel it before deleting it"):
        batch.delete()
    with pytest.raises(Conflict, match="takes no items"):
        batch.add([{"id": "b"}])


def test_batch_ids_and_listing(yard: Yard) -> None:
    ids = [yard.submit(noop, [{"n": n}], name=f"b{n}").id for n in range(5)]
    assert all(len(i.split("_")) == 3 and len(i.split("_")[2]) == 8 for i in ids)
    first = yard.batches(limit=2)
    assert [b.id for b in first.rows] == ids[::-1][:2]
    second = yard.batches(limit=2, after=first.next)
    assert [b.id for b in second.rows] == ids[::-1][2:4]
    assert yard.batches(state="processing").rows == []


def test_retry_policy_backs_off_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base=1.0, cap=10.0)
    assert policy.delay(1, draw=0.0) == 0.5 and policy.delay(1, draw=1.0) == 1.0
    assert policy.delay(3, draw=0.0) == 2.0
    assert policy.delay(30, draw=1.0) == 10.0
    assert policy.decide(ValueError(), attempt=1, max_attempt=3, draw=0.0) == 0.5
    assert policy.decide(ValueError(), attempt=3, max_attempt=3) is None
    assert policy.decide(Fail("x"), attempt=1, max_attempt=3) is None
    assert policy.decide(Retry(after=7), attempt=1, max_attempt=3) == 7
    with pytest.raises(ValueError):
        Retry(after=-1)


def test_concurrent_appends_take_distinct_positions(yard: Yard) -> None:
    batch = yard.submit(noop, [], open=True)
    appenders = [Yard(yard.url) for _ in range(4)]
    errors: list[BaseException] = []

    def append(other: Yard, n: int) -> None:
        try:
            other.batch(batch.id).add([{"n": n, "k": k} for k in range(50)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(y, n)) for n, y in enumerate(appenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in appenders:
        other.close()
    assert errors == []
    positions = [item.position for item in batch.items()]
    assert positions == list(range(1, 201))


def test_the_sqlite_url_takes_a_durability_option(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}?synchronous=full")
    assert isinstance(store, SqliteStore) and store.path.endswith("d.db")
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    with pytest.raises(ConfigError, match="synchronous must be one of"):
        open_store(f"sqlite:///{tmp_path / 'd.db'}?synchronous=maybe")
    with pytest.raises(ConfigError, match="unknown option 'wal'"):
        open_store(f"sqlite:///{tmp_path / 'd.db'}?wal=1")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts file descriptors via /proc")
def test_large_submissions_do_not_leak_connections(yard: Yard, tmp_path: Path) -> None:
    def open_files() -> int:
        """Files open on this yard's database (its file, WAL and shared memory): what a
        leaked connection holds. Other files of the test process come and go (an earlier
        test's threads closing theirs: CI saw 40 -> 39)."""
        gc.collect()
        found = 0
        for fd in Path("/proc/self/fd").iterdir():
            try:
                found += os.readlink(fd).startswith(str(tmp_path / "yard.db"))
            except OSError:  # closed meanwhile
                continue
        return found

    yard.submit(noop, ({"n": n} for n in range(6_000)))  # the first may open what stays open
    before = open_files()
    assert before > 0
    for _ in range(5):
        yard.submit(noop, ({"n": n} for n in range(6_000)))
    assert open_files() == before


def test_a_page_cursor_survives_deleting_its_batch(yard: Yard) -> None:
    ids = [yard.submit(noop, [{"n": n}]).id for n in range(4)]
    yard.run_until_idle(poll_interval=0.01)
    first = yard.batches(limit=2)
    yard.batch(first.rows[-1].id).delete()
    assert [b.id for b in yard.batches(limit=2, after=first.next).rows] == ids[1::-1]
    with pytest.raises(ConfigError, match="not a page cursor"):
        yard.batches(after="batch_1_x")
