"""``batchyard report``, ``results`` and ``compare`` as a user runs them: the installed command
in a subprocess, in a fresh folder, against batches run beforehand in a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard import FakeClock, TaskContext, Yard
from tests.conftest import FAST, shared_folder

BATCHYARD = Path(sys.executable).parent / "batchyard"

REPORT_KEYS = {
    "batch",
    "generated_at",
    "counts",
    "success_rate",
    "elapsed",
    "throughput",
    "durations",
    "attempts",
    "errors",
    "error_clusters",
    "usage",
    "metrics",
    "failed",
}
RESULT_KEYS = {"key", "state", "result", "error", "error_type", "attempts", "duration"}
RESULT_KEYS |= {"usage", "metrics"}
COLUMNS = [
    "key",
    "state",
    "result",
    "error",
    "error_type",
    "attempts",
    "duration",
    "tokens_in",
    "tokens_out",
    "cost",
    "metrics",
]


def batchyard(cwd: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BATCHYARD), "--db", f"sqlite:///{db}", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Batches:
    """Three finished batches in ``db``: ``mixed`` (3 of 4 items succeed), ``clean``, and
    ``again``, three of mixed's keys run after it (k3 now succeeds, k4 fails)."""

    def __init__(self, root: Path) -> None:
        self.cwd = root / "work"
        self.cwd.mkdir()
        self.db = root / "data" / "yard.db"
        self.db.parent.mkdir()
        clock = FakeClock()
        with Yard(f"sqlite:///{self.db}", clock=clock) as yard:

            @yard.task(name="e2e", concurrency=1, max_attempts=1)
            def e2e(item: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
                clock.advance(item["took"])
                ctx.metric("confidence", item["took"] / 10)
                ctx.usage(10 * item["took"], item["took"], 0.001 * item["took"])
                if item.get("fail"):
                    raise ValueError(f"item {item['id']} is broken")
                return {"echo": item["id"], "text": 'naïve, "quoted"\nline'}

            items = [{"id": f"k{n}", "took": n, "fail": n == 3} for n in range(1, 5)]
            self.mixed = yard.submit("e2e", items, name="mixed").id
            self.clean = yard.submit("e2e", [{"id": "z", "took": 2}], name="clean").id
            yard.run_until_idle(concurrency=1, **FAST)
            # k3 now succeeds, k4 fails: what an outcome matrix shows.
            again = [{"id": "k2", "took": 1}, {"id": "k3", "took": 1}]
            again.append({"id": "k4", "took": 1, "fail": True})
            self.again = yard.submit("e2e", again, name="again").id
            yard.run_until_idle(concurrency=1, **FAST)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return batchyard(self.cwd, self.db, *args)


@pytest.fixture
def batches(tmp_path: Path) -> Batches:
    return Batches(tmp_path)


# -- report ---------------------------------------------------------------------------------


def test_report_json_has_the_documented_shape_and_is_saved_beside_the_db(
    batches: Batches,
) -> None:
    done = batches.run("report", batches.mixed, "--format", "json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == REPORT_KEYS
    assert report["batch"]["id"] == batches.mixed
    assert report["counts"]["succeeded"] == 3 and report["counts"]["failed"] == 1
    assert report["success_rate"] == 0.75
    assert report["durations"]["p50"] == 2.5 and report["durations"]["max"] == 4.0
    assert report["errors"] == {"ValueError": 1}
    assert [(c["items"], c["share"], c["sample_key"]) for c in report["error_clusters"]] == [
        (1, 1.0, "k3")
    ]
    assert report["metrics"]["confidence"]["sum"] == pytest.approx(1.0)
    assert report["usage"]["tokens_in"] == 100
    assert report["failed"]["items"] == [
        {
            "key": "k3",
            "error_type": "ValueError",
            "error": "ValueError: item k3 is broken",
            "attempts": 1,
        }
    ]
    saved = batches.db.parent / "reports" / f"{batches.mixed}.json"
    assert json.loads(saved.read_text()) == report
    assert str(saved) in done.stderr


def test_report_json_flag_and_no_save(batches: Batches) -> None:
    done = batches.run("report", batches.clean, "--json", "--no-save")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["success_rate"] == 1.0
    assert not (batches.db.parent / "reports").exists()
    assert done.stderr == ""


def test_report_text(batches: Batches) -> None:
    done = batches.run("report", batches.mixed, "--no-save")

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out
    assert "4: 3 succeeded, 1 failed, 0 cancelled" in out
    assert "75.0%" in out
    assert "ValueError 1" in out
    assert re.search(
        r"^clusters +[0-9a-f]{10}  1 item \(100%\), 1 attempt  "
        r"ValueError: item k3 is broken @ test_cli_reports\.py:e2e$",
        out,
        re.MULTILINE,
    ), out
    assert "metric confidence" in out
    assert "k3: ValueError: item k3 is broken" in out


def test_report_text_is_str_of_batch_report(batches: Batches) -> None:
    done = batches.run("report", batches.mixed, "--no-save")

    assert done.returncode == 0, done.stderr
    with Yard(f"sqlite:///{batches.db}") as yard:
        report = yard.batch(batches.mixed).report()
    assert done.stdout == f"{report}\n"


def test_report_text_to_a_file(batches: Batches) -> None:
    target = batches.cwd / "report.txt"
    done = batches.run("report", batches.mixed, "-o", str(target))

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    text = target.read_text(encoding="utf-8")
    assert "1 item:\n" in text and "k3: ValueError: item k3 is broken" in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert (batches.db.parent / "reports" / f"{batches.mixed}.json").exists()


def test_report_csv_to_a_file(batches: Batches) -> None:
    target = batches.cwd / "out" / "report.csv"
    done = batches.run("report", batches.mixed, "--format", "csv", "-o", str(target))

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    rows = dict(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert rows["field"] == "value"
    assert rows["counts.failed"] == "1"
    assert float(rows["durations.p95"]) == pytest.approx(3.85)
    assert rows["errors.ValueError"] == "1"
    assert rows["failed.items.0.key"] == "k3"
    assert rows["batch.name"] == "mixed"


# -- results --------------------------------------------------------------------------------


def test_results_jsonl_round_trips(batches: Batches) -> None:
    done = batches.run("results", batches.mixed)

    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["key"] for r in records] == ["k1", "k2", "k3", "k4"]
    assert all(set(r) == RESULT_KEYS for r in records)
    first = records[0]
    assert first["result"] == {"echo": "k1", "text": 'naïve, "quoted"\nline'}
    assert first["usage"] == {"tokens_in": 10, "tokens_out": 1, "cost": 0.001}
    assert (first["state"], first["attempts"], first["duration"]) == ("succeeded", 1, 1.0)
    assert first["metrics"] == {"confidence": 0.1}
    assert records[2]["result"] is None
    assert records[2]["error_type"] == "ValueError"
    assert "item k3 is broken" in records[2]["error"]


def test_results_csv_round_trips_with_the_result_as_json_text(batches: Batches) -> None:
    target = batches.cwd / "results.csv"
    done = batches.run("results", batches.mixed, "--format", "csv", "-o", str(target))

    assert done.returncode == 0, done.stderr
    assert "wrote 4 items" in done.stderr
    with target.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert json.loads(rows[0]["result"]) == {"echo": "k1", "text": 'naïve, "quoted"\nline'}
    assert (rows[0]["tokens_in"], rows[0]["cost"]) == ("10", "0.001")
    assert json.loads(rows[3]["metrics"]) == {"confidence": 0.4}
    assert rows[2]["result"] == "" and rows[2]["error_type"] == "ValueError"


def test_results_parquet_round_trips(batches: Batches) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    target = batches.cwd / "results.parquet"
    done = batches.run("results", batches.mixed, "--format", "parquet", "-o", str(target))

    assert done.returncode == 0, done.stderr
    rows = pq.read_table(target).to_pylist()
    assert [row["key"] for row in rows] == ["k1", "k2", "k3", "k4"]
    assert list(rows[0]) == COLUMNS
    assert json.loads(rows[1]["result"]) == {"echo": "k2", "text": 'naïve, "quoted"\nline'}
    assert (rows[1]["attempts"], rows[1]["duration"], rows[1]["tokens_in"]) == (1, 2.0, 20)
    assert rows[2]["result"] is None and rows[2]["state"] == "failed"


def test_results_and_report_take_the_format_of_their_file_by_default(batches: Batches) -> None:
    # results.csv holds CSV without --format, as an INPUT file is read by its extension.
    done = batches.run("results", batches.mixed, "-o", str(batches.cwd / "results.csv"))
    assert done.returncode == 0, done.stderr
    with (batches.cwd / "results.csv").open(newline="", encoding="utf-8") as f:
        assert csv.DictReader(f).fieldnames == COLUMNS
    done = batches.run("results", batches.mixed, "-o", str(batches.cwd / "results.txt"))
    assert done.returncode == 0, done.stderr
    first = (batches.cwd / "results.txt").read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(first)["key"] == "k1"  # any other name: JSONL, as before
    done = batches.run(
        "results", batches.mixed, "--format", "jsonl", "-o", str(batches.cwd / "r.csv")
    )
    assert json.loads((batches.cwd / "r.csv").read_text().splitlines()[0])["key"] == "k1"

    done = batches.run("report", batches.mixed, "--no-save", "-o", str(batches.cwd / "r.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((batches.cwd / "r.json").read_text())["counts"]["failed"] == 1


def test_results_to_a_parquet_file_is_parquet_without_format(batches: Batches) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    target = batches.cwd / "results.parquet"
    done = batches.run("results", batches.mixed, "-o", str(target))

    assert done.returncode == 0, done.stderr
    assert [row["key"] for row in pq.read_table(target).to_pylist()] == ["k1", "k2", "k3", "k4"]


def test_results_of_one_state(batches: Batches) -> None:
    done = batches.run("results", batches.mixed, "--state", "failed")

    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["key"] for line in done.stdout.splitlines()] == ["k3"]


def test_parquet_without_pyarrow_names_the_extra(batches: Batches) -> None:
    target = batches.cwd / "results.parquet"
    blocked = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from batchyard.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    args = ["results", batches.mixed, "--format", "parquet", "-o", str(target)]
    done = subprocess.run(
        [sys.executable, "-c", blocked, "--db", f"sqlite:///{batches.db}", *args],
        cwd=batches.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "pip install 'batchyard[parquet]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not target.exists()


# -- compare --------------------------------------------------------------------------------


def test_compare_json(batches: Batches) -> None:
    done = batches.run("compare", batches.mixed, batches.clean, "--json")

    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert set(view) == {"batches", "metrics", "outcomes"}
    assert view["outcomes"] == [
        {"first": batches.mixed, "second": batches.clean, "shared": 0, "cells": []}
    ]
    assert view["metrics"] == ["confidence"]
    mixed, clean = view["batches"]
    assert (mixed["id"], clean["id"]) == (batches.mixed, batches.clean)
    assert set(mixed) == {
        "id",
        "name",
        "task",
        "template",
        "rerun_of",
        "state",
        "counts",
        "success_rate",
        "elapsed",
        "throughput",
        "durations",
        "attempts",
        "usage",
        "metrics",
    }
    assert (mixed["success_rate"], clean["success_rate"]) == (0.75, 1.0)
    assert (mixed["elapsed"], clean["elapsed"]) == (10.0, 2.0)
    assert clean["usage"]["tokens_in"] == 20
    assert clean["metrics"]["confidence"]["mean"] == 0.2


def test_compare_text(batches: Batches) -> None:
    done = batches.run("compare", batches.mixed, batches.clean)

    assert done.returncode == 0, done.stderr
    assert batches.mixed in done.stdout and batches.clean in done.stdout
    for label in ("success rate", "throughput", "duration p95", "tokens in", "cost"):
        assert label in done.stdout
    assert "confidence (mean)" in done.stdout


def test_compare_counts_the_shared_items_by_their_state_in_each(batches: Batches) -> None:
    done = batches.run("compare", batches.mixed, batches.again, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcomes"] == [
        {
            "first": batches.mixed,
            "second": batches.again,
            "shared": 3,
            "cells": [
                {"first": "succeeded", "second": "succeeded", "items": 1},
                {"first": "succeeded", "second": "failed", "items": 1},
                {"first": "failed", "second": "succeeded", "items": 1},
            ],
        }
    ]
    text = batches.run("compare", batches.mixed, batches.again, batches.clean)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"items in both {batches.mixed} and {batches.again} (3)" in text.stdout
    assert f"items in both {batches.mixed} and {batches.clean}: none" in text.stdout
    header = next(n for n, line in enumerate(lines) if line.split() == ["succeeded", "failed"])
    assert lines[header + 1].split() == ["succeeded", "1", "1"]
    assert lines[header + 2].split() == ["failed", "1", "0"]


# -- exit codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["report", "batch_0_missing"],
        ["results", "batch_0_missing"],
        ["compare", "{mixed}", "batch_0_missing"],
    ],
)
def test_an_unknown_batch_exits_1(batches: Batches, args: list[str]) -> None:
    done = batches.run(*(arg.format(mixed=batches.mixed) for arg in args))

    assert done.returncode == 1
    assert "no batch 'batch_0_missing'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{mixed}", "--format", "xml"],
        ["report", "{mixed}", "--max-failed", "0"],
        ["results", "{mixed}", "--format", "xlsx"],
        ["results", "{mixed}", "--state", "finished"],
        ["report"],
    ],
)
def test_bad_options_exit_2(batches: Batches, args: list[str]) -> None:
    done = batches.run(*(arg.format(mixed=batches.mixed) for arg in args))

    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert not (batches.db.parent / "reports").exists()


# -- flat memory ----------------------------------------------------------------------------

BIG = 200_000
#: A tenth as many: enough for every buffer of an export to fill (two Parquet row groups).
SMALL = 20_000
#: How much more peak RSS exporting BIG items may take than SMALL ones. Holding the items
#: would take several hundred MB more.
FLAT_MB = 40
_PEAK = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """A SQLite file with two finished batches, of BIG and of SMALL items (~200-byte
    payloads and results). The tests only read it: one worker of the run makes it."""
    with shared_folder(tmp_path_factory, "big") as folder:
        db, ids = folder / "big.db", folder / "ids.json"
        if not ids.exists():
            db.unlink(missing_ok=True)  # what a failed attempt left
            ids.write_text(json.dumps(_make_big(db)))
        big, small = json.loads(ids.read_text())
    yield db, big, small


def _make_big(db: Path) -> list[str]:
    with Yard(f"sqlite:///{db}") as yard:

        @yard.task(name="echo", max_attempts=1)
        async def echo(item: dict[str, Any]) -> dict[str, Any]:
            return {"text": item["text"][::-1], "n": item["id"]}

        def items(count: int) -> Iterator[dict[str, Any]]:
            return ({"id": n, "text": f"{n:08d}" * 25} for n in range(count))

        big = yard.submit("echo", items(BIG)).id
        small = yard.submit("echo", items(SMALL)).id
        yard.run_until_idle(concurrency=256, **FAST)
    return [big, small]


def peak_kb(cwd: Path, db: Path, *args: str) -> int:
    """The peak RSS of ``batchyard ARGS`` in KB, as its parent sees it."""
    command = [str(BATCHYARD), "--db", f"sqlite:///{db}", *args]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KB on Linux")
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_results_export_in_flat_memory(
    big: tuple[Path, str, str], tmp_path: Path, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow.parquet")
    db, big_id, small_id = big
    out = tmp_path / f"out.{fmt}"

    baseline = peak_kb(tmp_path, db, "results", small_id, "--format", fmt, "-o", str(out))
    peak = peak_kb(tmp_path, db, "results", big_id, "--format", fmt, "-o", str(out))

    grew = (peak - baseline) / 1024
    assert grew < FLAT_MB, f"peak {peak} KB for {BIG:,} items, {baseline} KB for {SMALL:,}"
    if fmt == "parquet":
        assert pytest.importorskip("pyarrow.parquet").ParquetFile(out).metadata.num_rows == BIG
    else:
        with out.open("rb") as f:
            lines = sum(1 for _ in f)  # (no result here holds a newline)
        assert lines == BIG + (fmt == "csv")
    os.remove(out)


# -- why items ran again --------------------------------------------------------------------


def test_report_status_and_items_count_runs_and_say_why_items_ran_again(tmp_path: Path) -> None:
    """One item's worker is lost, one is released mid-run, one is given back unstarted: the
    CLI counts runs (2, 2, 1) and says why two items ran again."""
    cwd, db = tmp_path, tmp_path / "yard.db"
    clock = FakeClock()
    with Yard(f"sqlite:///{db}", clock=clock) as yard:

        @yard.task(name="e2e", max_attempts=2)
        def e2e(item: dict[str, Any]) -> str:
            return "ok"

        batch = yard.submit("e2e", [{"id": key} for key in ("lost", "released", "unrun")])
        now = clock.now()
        _, released, unrun = yard.store.claim("w", {"e2e": 3}, 3, now, 30.0)
        yard.store.release(
            [(c.item_id, c.attempt) for c in (released, unrun)], now, ran=[released.item_id]
        )
        yard.store.reclaim_expired(now + 31)
        yard.run_until_idle(concurrency=1, **FAST)

    report = batchyard(cwd, db, "report", batch.id)
    assert report.returncode == 0, report.stderr
    lines = [" ".join(line.split()) for line in report.stdout.splitlines()]
    assert "attempts 5 in all, 1.67 per item, 2 items ran again" in lines
    assert "ran again 2 runs: worker lost 1, released 1" in lines
    assert "errors none" in lines

    data = json.loads(batchyard(cwd, db, "report", batch.id, "--format", "json").stdout)
    assert data["attempts"]["again"] == {"worker_lost": 1, "released": 1}

    status = batchyard(cwd, db, "status", batch.id)
    assert "ran again 2 runs: worker lost 1, released 1" in [
        " ".join(line.split()) for line in status.stdout.splitlines()
    ]
    items = json.loads(batchyard(cwd, db, "items", batch.id, "--json").stdout)
    rows = items["items"] if isinstance(items, dict) else items
    assert {row["key"]: row["attempts"] for row in rows} == {
        "lost": 2,
        "released": 2,
        "unrun": 1,
    }
