"""Datasets on every store: loading (all or nothing), fields, filters with typed values, sorted
keyset pages with their counts, deleting, and batches copied from a selection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from batchyard import items as item_codec
from batchyard.errors import (
    ConfigError,
    DatasetNotFound,
    DuplicateKey,
    InputError,
    InvalidItem,
)
from batchyard.models import BatchOptions
from batchyard.records import Dataset, FieldTally, LoadMode
from batchyard.selection import Selection, Sort
from batchyard.states import BatchState
from batchyard.store.base import Store

T0 = 1_700_000_000.0


def load(
    store: Store,
    name: str,
    rows: Iterable[dict[str, Any]],
    mode: LoadMode = "create",
    key_field: str | None = "id",
    size: int = 3,
) -> Dataset:
    """Load rows as a Datasets facade does, in chunks of ``size`` (small: loads of a few
    rows span several chunks)."""
    tally = FieldTally()
    stream = tally.over(rows)
    return store.load_dataset(
        name,
        mode,
        key_field,
        lambda start, kept: item_codec.chunks(stream, key_field=kept, start=start, size=size),
        tally,
        T0,
    )


def leads(n: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "id": f"k{i}",
            "name": f"{'Acme' if i % 3 == 0 else 'Globex'} {i}",
            "industry": ["SaaS", "Retail"][i % 2],
            "employees": i * 10,
        }
        for i in range(1, n + 1)
    ]


def keys(store: Store, name: str, *where: str, **options: Any) -> list[str]:
    page = store.dataset_rows(name, Selection.of(where), limit=1000, **options)
    assert page.count == len(page.rows)
    return [row.key for row in page.rows]


def test_a_load_keeps_rows_in_order_with_their_fields(store: Store) -> None:
    rows = [*leads(3), {"id": "odd", "tags": ["a"], "employees": None, "extra": {"x": 1}}]
    dataset = load(store, "leads", rows)
    assert (dataset.name, dataset.key_field, dataset.rows) == ("leads", "id", 4)
    assert [(f.name, f.types) for f in dataset.fields] == [
        ("id", ("string",)),
        ("name", ("string",)),
        ("industry", ("string",)),
        ("employees", ("number", "null")),
        ("tags", ("array",)),
        ("extra", ("object",)),
    ]
    page = store.dataset_rows("leads")
    assert [(r.key, r.position) for r in page.rows] == [("k1", 1), ("k2", 2), ("k3", 3), ("odd", 4)]
    assert page.rows[3].data == rows[3] and page.count == 4 and page.next is None
    assert [d.name for d in store.list_datasets()] == ["leads"]
    assert store.get_dataset("leads") == dataset


def test_rows_without_the_key_field_are_keyed_by_position(store: Store) -> None:
    load(store, "topics", [{"topic": "tides"}, {"topic": "owls"}], key_field=None)
    load(store, "topics", [{"topic": "moss"}], mode="append")
    assert keys(store, "topics") == ["1", "2", "3"]
    assert store.get_dataset("topics").key_field is None


def test_create_append_and_replace(store: Store) -> None:
    load(store, "leads", leads(4))
    with pytest.raises(ConfigError, match="exists already"):
        load(store, "leads", leads(1))
    with pytest.raises(DatasetNotFound):
        load(store, "nope", leads(1), mode="append")
    grown = load(store, "leads", [{"id": "k5", "employees": "many", "city": "Oslo"}], "append")
    assert grown.rows == 5 and keys(store, "leads")[-1] == "k5"
    assert grown.field("employees").types == ("string", "number")  # type: ignore[union-attr]
    assert grown.field_names[-1] == "city"
    replaced = load(store, "leads", [{"sku": "a1"}, {"sku": "b2"}], "replace", key_field="sku")
    assert (replaced.rows, replaced.key_field, replaced.field_names) == (2, "sku", ["sku"])
    assert keys(store, "leads") == ["a1", "b2"]
    assert load(store, "fresh", leads(1), "replace").rows == 1


def test_a_bad_load_writes_nothing(store: Store) -> None:
    load(store, "leads", leads(4))
    before = store.get_dataset("leads")
    # A duplicate of a kept row, in the third chunk (after two chunks went in).
    with pytest.raises(DuplicateKey) as caught:
        load(store, "leads", [*leads(10)[4:], {"id": "k2"}], "append")
    assert (caught.value.position, caught.value.first_position, caught.value.key) == (11, 2, "k2")
    with pytest.raises(DuplicateKey) as caught:
        load(store, "leads", [{"id": "a"}, {"id": "b"}, {"id": "a"}], "replace")
    assert (caught.value.position, caught.value.first_position) == (3, 1)
    with pytest.raises(InputError, match="no rows: the input is empty"):
        load(store, "leads", [], "replace")
    with pytest.raises(InputError, match="no rows"):
        load(store, "empty", [])
    assert store.get_dataset("leads") == before
    assert keys(store, "leads") == ["k1", "k2", "k3", "k4"]
    assert [d.name for d in store.list_datasets()] == ["leads"]


def test_conditions(store: Store) -> None:
    load(store, "leads", leads(12))
    assert keys(store, "leads", "industry=SaaS", "employees>=100") == ["k10", "k12"]
    # Numbers compare as numbers: as text, "100" would sort before "20".
    assert keys(store, "leads", "employees<30") == ["k1", "k2"]
    assert keys(store, "leads", "employees>100", "employees<=120") == ["k11", "k12"]
    assert keys(store, "leads", "employees!=10|20|30", "employees<60") == ["k4", "k5"]
    assert keys(store, "leads", "id=k3|k7|nope") == ["k3", "k7"]
    assert keys(store, "leads", "name~acme 1") == ["k12"]  # contains, any case
    assert keys(store, "leads", "name~ACME", "industry!=SaaS") == ["k3", "k9"]
    assert keys(store, "leads", "employees=25") == []
    assert keys(store, "leads", "employees=1e2") == ["k10"]


def test_values_read_as_the_field_type(store: Store) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "zip": "01234", "v": 5, "ok": True},
        {"id": "b", "zip": "1234", "v": "5", "ok": False},
        {"id": "c", "v": None},
        {"id": "d", "zip": "Z", "v": "high", "ok": True},
        {"id": "e", "zip": "a", "v": 12.5},
        {"id": "f", "zip": "é"},
    ]
    load(store, "mixed", rows)
    assert keys(store, "mixed", "zip=01234") == ["a"]  # text stays text
    assert keys(store, "mixed", "v=5") == ["a"]  # a number, so only numbers match
    assert keys(store, "mixed", "v=high") == ["d"]
    assert keys(store, "mixed", "v>6") == ["e"]
    assert keys(store, "mixed", "v!=5") == ["e"]  # rows of other types, or none, do not match
    assert keys(store, "mixed", "ok=true") == ["a", "d"]
    assert keys(store, "mixed", "ok<true") == ["b"]
    # Text compares by code point, the same on every store: "Z" < "a" < "é".
    assert keys(store, "mixed", "zip>Z") == ["e", "f"]
    assert keys(store, "mixed", "zip<a") == ["a", "b", "d"]


def test_field_names_any_json_key_may_have(store: Store) -> None:
    names = ["a b", "a.b", 'say "hi"', "back\\slash", "é", "it's", "$"]
    load(store, "odd", [{name: i for i, name in enumerate(names)}, {name: -1 for name in names}])
    for i, name in enumerate(names):
        assert keys(store, "odd", f"{name}={i}") == ["1"], name


def test_a_condition_the_fields_cannot_answer_is_refused(store: Store) -> None:
    load(store, "leads", [*leads(2), {"id": "t", "tags": ["x"]}])
    with pytest.raises(InputError) as caught:
        store.dataset_rows("leads", Selection.of(["industy=SaaS"]))
    assert str(caught.value) == (
        "no row of 'leads' has a field 'industy'; its fields: id, name, industry, employees, tags"
    )
    with pytest.raises(InputError, match="'employees' holds numbers, and 'lots' is not a number"):
        store.dataset_rows("leads", Selection.of(["employees>=lots"]))
    with pytest.raises(InputError, match="'~' looks for text"):
        store.dataset_rows("leads", Selection.of(["employees~1"]))
    with pytest.raises(InputError, match="holds arrays"):
        store.dataset_rows("leads", Selection.of(["tags=x"]))
    with pytest.raises(DatasetNotFound):
        store.dataset_rows("nope")


def test_rows_holding_nul_characters_round_trip_and_filter_alike(store: Store) -> None:
    # A NUL character is JSON's \u0000, which PostgreSQL's jsonb refuses: the row is kept
    # whole all the same, and filters and sorts answer as they do without one.
    rows: list[dict[str, Any]] = [
        {"id": "a", "v": "a", "n": 1},
        {
            "id": "z",
            "v": "a\x00z",
            "n": 2,
            "deep": {"k\x00": ["\x00\x00", "\\u0000 as text", "\\\x00", "\\\\u0000"]},
            'say "hi"': "\x00hi",
        },
        {"id": "b", "v": "ab", "n": 3, "w": "\\u0000"},
    ]
    dataset = load(store, "nul", rows, size=2)
    assert [(f.name, f.types) for f in dataset.fields][:3] == [
        ("id", ("string",)),
        ("v", ("string",)),
        ("n", ("number",)),
    ]
    assert [f.name for f in dataset.fields if f.holds_nul] == ["v", 'say "hi"']
    assert [r.data for r in store.dataset_rows("nul").rows] == rows
    assert keys(store, "nul", "n>=2") == ["z", "b"]
    assert keys(store, "nul", "v~z") == ["z"]
    assert keys(store, "nul", "v=a") == ["a"]
    assert keys(store, "nul", "v!=a") == ["z", "b"]
    assert keys(store, "nul", "v>a") == ["z", "b"]
    assert keys(store, "nul", "v<ab") == ["a", "z"]
    assert keys(store, "nul", "w~u0000") == ["b"]
    assert keys(store, "nul", 'say "hi"~hi') == ["z"]
    assert keys(store, "nul", sort=Sort("v")) == ["a", "z", "b"]
    assert keys(store, "nul", sort=Sort("v", descending=True)) == ["b", "z", "a"]
    # Page by page, the cursor carries the sort value of a row with a NUL character.
    first = store.dataset_rows("nul", sort=Sort("v"), limit=2)
    after = store.dataset_rows("nul", sort=Sort("v"), limit=2, cursor=first.next)
    assert [r.key for r in [*first.rows, *after.rows]] == ["a", "z", "b"]
    store.create_batch_from_dataset("b1", BatchOptions(task="t"), "nul", Selection.of(["v~z"]), T0)
    assert [item.payload for item in store.items("b1")] == [rows[1]]


def test_a_nul_character_in_a_key_or_a_field_name_is_refused(store: Store) -> None:
    # PostgreSQL's text holds no NUL character, and keys and field names are text there.
    with pytest.raises(InvalidItem, match="field 'id' holds a NUL character") as caught:
        load(store, "nul", [{"id": "a"}, {"id": "b\x00"}])
    assert caught.value.position == 2
    with pytest.raises(InvalidItem, match="field name 'f\\\\x00g' holds a NUL") as caught:
        load(store, "nul", [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d", "f\x00g": 1}])
    assert (caught.value.position, caught.value.key) == (4, "d")
    with pytest.raises(DatasetNotFound):
        store.get_dataset("nul")


def test_sorted_keyset_pages(store: Store) -> None:
    rows: list[dict[str, Any]] = [
        {"id": f"r{i}", "size": (i * 7) % 5 if i % 4 else None} for i in range(1, 24)
    ]
    load(store, "sizes", rows)
    for descending in (False, True):
        sort = Sort("size", descending)
        seen: list[str] = []
        cursor = None
        while True:
            page = store.dataset_rows("sizes", sort=sort, limit=4, cursor=cursor)
            assert page.count == 23
            seen += [r.key for r in page.rows]
            if page.next is None:
                break
            cursor = page.next
        with_size = sorted(
            (r for r in rows if r["size"] is not None),
            key=lambda r: (-r["size"] if descending else r["size"], int(r["id"][1:])),
        )
        expected = [r["id"] for r in with_size] + [r["id"] for r in rows if r["size"] is None]
        assert seen == expected
    page = store.dataset_rows("sizes", Selection.of(["size>=3"]), sort=Sort("size"), limit=2)
    big = [r for r in rows if r["size"] is not None and r["size"] >= 3]
    assert page.count == len(big) == 7 and [r.data["size"] for r in page.rows] == [3, 3]
    with pytest.raises(ConfigError, match="another sort"):
        store.dataset_rows("sizes", sort=Sort("size", True), cursor=page.next)
    with pytest.raises(ConfigError, match="not a page cursor"):
        store.dataset_rows("sizes", cursor="nonsense!")
    # A cursor past the rows there are now: an empty last page, still with the count.
    load(store, "sizes", rows[:3], "replace")
    late = store.dataset_rows("sizes", sort=Sort("size", True), limit=2, cursor=cursor)
    assert (late.rows, late.count, late.next) == ([], 3, None)
    nothing = store.dataset_rows("sizes", Selection.of(["size>100"]), sort=Sort("size"))
    assert (nothing.rows, nothing.count, nothing.next) == ([], 0, None)
    load(store, "sizes", [{"id": "x", "size": "big"}], "append")
    with pytest.raises(InputError, match="cannot sort by 'size'"):
        store.dataset_rows("sizes", sort=Sort("size"))


def test_a_page_of_a_big_dataset_reads_only_the_page(store: Store) -> None:
    rows = ({"id": i, "n": i % 1000, "kind": "ab"[i % 2]} for i in range(100_000))
    load(store, "big", rows, size=5000)
    fetched: list[int] = []
    read = store._read  # type: ignore[attr-defined]  # every store reads through _read

    def counting(query: str, params: Any = ()) -> list[Any]:
        rows: list[Any] = read(query, params)
        fetched.append(len(rows))
        return rows

    store._read = counting  # type: ignore[attr-defined]
    selection = Selection.of(["kind=a", "n>=500"])
    page = store.dataset_rows("big", selection, sort=Sort("n", True), limit=50)
    assert page.count == 25_000 and len(page.rows) == 50
    assert {r.data["n"] for r in page.rows} == {998}  # kind a: even ids
    following = store.dataset_rows("big", selection, sort=Sort("n", True), cursor=page.next)
    assert following.rows[0].key not in {r.key for r in page.rows}
    # Per page: the dataset, its fields, and the page (one row more, to know there is a
    # next) with the count on each of its rows.
    assert fetched == [1, 3, 51, 1, 3, 51], fetched


def test_a_batch_from_a_selection(store: Store) -> None:
    load(store, "leads", leads(12))
    options = BatchOptions(task="t", metadata={"by": "me"}, max_attempts=2)
    status = store.create_batch_from_dataset(
        "batch_a", options, "leads", Selection.of(["industry=SaaS", "employees>=60"]), T0
    )
    assert status.state is BatchState.QUEUED and status.counts.pending == 4
    assert status.metadata == {
        "by": "me",
        "dataset": "leads",
        "where": ["industry=SaaS", "employees>=60"],
        "rows": 4,
    }
    items = store.items("batch_a")
    assert [(i.key, i.position) for i in items] == [("k6", 1), ("k8", 2), ("k10", 3), ("k12", 4)]
    assert items[0].payload == leads(12)[5]
    picked = store.create_batch_from_dataset(
        "batch_b", options, "leads", Selection.of(keys=["k9", "k1"]), T0
    )
    assert [i.key for i in store.items("batch_b")] == ["k1", "k9"]
    assert picked.metadata["keys"] == ["k9", "k1"]
    # Deleting the dataset leaves the batches made from it whole.
    assert store.delete_dataset("leads") == 12
    assert store.list_datasets() == [] and len(store.items("batch_a")) == 4
    with pytest.raises(DatasetNotFound):
        store.delete_dataset("leads")


def test_a_batch_from_no_rows_is_refused_and_writes_nothing(store: Store) -> None:
    load(store, "leads", leads(4))
    options = BatchOptions(task="t")
    attempts: list[tuple[Selection, str]] = [
        (Selection.of(["industry=Mining"]), "no rows of 'leads' match industry=Mining"),
        (
            Selection.of(["industry=SaaS", "employees>100"]),
            "no rows of 'leads' match industry=SaaS and employees>100",
        ),
        (Selection.of(keys=["k1", "zz"]), "'leads' has no row with key 'zz'"),
        (Selection.of(["industy=SaaS"]), "has a field 'industy'"),
    ]
    for selection, message in attempts:
        with pytest.raises(InputError, match=message):
            store.create_batch_from_dataset("batch_x", options, "leads", selection, T0)
    with pytest.raises(DatasetNotFound):
        store.create_batch_from_dataset("batch_x", options, "nope", Selection(), T0)
    assert store.list_batches().rows == []


def test_concurrent_loads_of_one_name_leave_one_whole_dataset(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(tag: str) -> str:
        rows = ({"id": f"{tag}{i}", "tag": tag} for i in range(2_000))
        try:
            load(store, "leads", rows, size=500)
        except ConfigError as exc:
            assert "leads" in str(exc)
            return "refused"
        return tag

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(attempt, ["a", "b"]))
    assert outcomes in (["a", "refused"], ["b", "refused"]), outcomes
    winner = outcomes[0]
    page = store.dataset_rows("leads", Selection.of([f"tag={winner}"]), limit=1)
    assert page.count == 2_000 == store.get_dataset("leads").rows
