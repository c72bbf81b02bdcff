"""Call sites ask the task (hooks on TaskSpec), never compare its name."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard import ConfigError, ItemState, Yard
from batchyard.validation import Problem, Validation, check_rows


async def echo(item: dict[str, Any]) -> dict[str, Any]:
    return item


def test_a_task_without_a_row_check_reads_every_row(yard: Yard) -> None:
    spec = yard.registry.resolve(echo)
    found = check_rows(spec, {}, [(1, {"a": 1}), (2, {"a": 2})])
    assert found == Validation((), 2, True) and found.ok


def test_a_task_checks_rows_with_its_own_hook(yard: Yard) -> None:
    seen: list[Any] = []

    def needs_a(params: dict[str, Any], rows: Any) -> Validation:
        seen.append(params)
        bad = tuple(Problem(line, f"{line}: no a") for line, item in rows if "a" not in item)
        return Validation(bad, 2, True)

    spec = yard.registry.resolve(yard.task(name="strict", validate_rows=needs_a)(echo))
    found = check_rows(spec, {"p": 1}, [(1, {"a": 1}), (2, {"b": 2})])
    assert seen == [{"p": 1}]
    assert [p.line for p in found.problems] == [2] and not found.ok


def test_estimate_asks_the_task_and_runs_its_pilot_here(yard: Yard) -> None:
    calls: list[dict[str, Any]] = []

    def guess(store: Any, params: Any, items: Any, *, concurrency: int, pilot: Any) -> Any:
        ran = pilot.run(list(items)[: pilot.size]) if pilot is not None else None
        calls.append({"params": params, "items": list(items), "n": concurrency, "ran": ran})
        return "an estimate"

    yard.task(name="guessable", estimate=guess)(echo)
    rows = [{"id": i} for i in range(5)]
    # The hook returns a marker, not an Estimate: Yard.estimate hands back whatever it got.
    estimate: object = yard.estimate("guessable", rows, params={"x": 1}, concurrency=3)
    assert estimate == "an estimate"
    assert calls[-1] == {"params": {"x": 1}, "items": rows, "n": 3, "ran": None}

    yard.estimate("guessable", rows, params={"x": 1}, pilot=2, concurrency=3)
    trial = yard.batch(calls[-1]["ran"])
    status = trial.status()
    assert status.name == "pilot" and status.counts.succeeded == 2
    assert [item.state for item in trial.items()] == [ItemState.SUCCEEDED] * 2


def test_estimate_refuses_a_task_that_cannot(yard: Yard) -> None:
    yard.task(name="plain")(echo)
    with pytest.raises(ConfigError, match="estimates are for the llm task, not plain"):
        yard.estimate("plain", [{"id": 1}], params={})
