"""Spend before you spend: ``validate`` (does every row render?) and ``estimate`` (what
will it cost and take?), both before a single call to a provider."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    add_json,
    console,
    format_duration,
    open_yard,
    positive_int,
    print_json,
    wrap,
)
from batchyard.cli.submit import (
    INPUT_HELP,
    add_input_options,
    add_limit_options,
    read_input,
    spending,
    task_params,
)
from batchyard.errors import CommandError

if TYPE_CHECKING:
    from batchyard.inputs import Input
    from batchyard.llm.estimate import Estimate

VALIDATE_JSON = """\
--json prints {"task", "checked" (rows read), "complete" (false when it stopped at 20
problems), "ok", "problems": [{"line", "message"}]}"""

ESTIMATE_JSON = """\
--json prints {"model", "items", "cached" (answered by the response cache: free),
  "calls", "input_tokens", "input_exact", "output_tokens", "output_tokens_range": [low,
  high], "output_source", "price": {"input", "output", "cached_input" (per 1M tokens),
  "source"} or null, "cost", "cost_range": [low, high] (null without a price),
  "duration_seconds", "bound_by", "batch" (with --batch), "spent" (with --batch; null
  when no call had a price)}"""


def register(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="check that every input row renders for the llm task, before any call",
        description=wrap(
            "Read INPUT as 'submit' would and check every row without calling anything: "
            "for the llm task, that the prompt template renders over it (every missing "
            "field named with its line). Exit status 2 when a row fails. " + INPUT_HELP
        ),
        epilog=VALIDATE_JSON,
        formatter_class=RAW,
    )
    _add_input(validate)
    add_json(validate)
    validate.set_defaults(run=run_validate)

    estimate = commands.add_parser(
        "estimate",
        help="what an llm batch will cost and how long it will take, before it runs",
        description=wrap(
            "Estimate the cost (with a low-high range), tokens and duration of the llm "
            "task over INPUT under the given parameters and rate limits, without creating "
            "a batch: input tokens counted from the rendered prompts, output tokens from "
            "earlier answers of the same model and template (or a --pilot run), items the "
            "response cache answers counted as free. With --batch ID instead of TASK "
            "INPUT: the items that batch still has to do. " + INPUT_HELP
        ),
        epilog=ESTIMATE_JSON,
        formatter_class=RAW,
    )
    _add_input(estimate, optional=True)
    add_limit_options(estimate)
    estimate.add_argument(
        "--pilot",
        type=positive_int,
        default=0,
        metavar="N",
        help="first run N items spread over the input (a small batch named 'pilot'; they "
        "cost what they cost, and the run reuses their answers) to learn answer lengths",
    )
    estimate.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        metavar="N",
        help="calls in flight at once, for the duration (default 16)",
    )
    estimate.add_argument(
        "--batch", metavar="ID", help="estimate the items this batch still has to do"
    )
    estimate.add_argument(
        "--template",
        metavar="NAME[@N]",
        help="the task and parameters of a template version (then give only INPUT); a "
        "version with no answers of its own yet is estimated from the previous version's",
    )
    add_json(estimate)
    estimate.set_defaults(run=run_estimate)


def _add_input(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    nargs = "?" if optional else None
    parser.add_argument("task", metavar="TASK", nargs=nargs, help="the task, e.g. llm")
    parser.add_argument("input", metavar="INPUT", nargs=nargs, help="a .jsonl/.csv/.parquet, -")
    add_input_options(parser)


# -- validate -------------------------------------------------------------------------


def run_validate(args: argparse.Namespace) -> int:
    from batchyard.tasks import TaskRegistry
    from batchyard.validation import check_rows

    spec = TaskRegistry().resolve(args.task)
    with read_input(args) as items:
        found = check_rows(spec, task_params(args), _numbered(items))
    view = {"task": spec.name, **found.as_dict()}
    if args.json:
        print_json(view)
    else:
        _print_validation(args.input, view, checks_rows=spec.validate_rows is not None)
    return 0 if found.ok else 2


def _numbered(items: Input) -> Iterator[tuple[int, Any]]:
    for item in items:
        yield items.line_of(items.count) or items.count, item


def _print_validation(source: str, view: dict[str, Any], *, checks_rows: bool) -> None:
    out = console()
    for problem in view["problems"]:
        out.print(f"{source}:{problem['message']}", markup=False, highlight=False)
    if view["ok"] and checks_rows:
        out.print(f"{view['checked']:,} rows checked: every row renders")
    elif view["ok"]:
        # "Renders" would claim a check that a task without a row check never made.
        out.print(
            f"{view['checked']:,} rows read: every row is valid input; {view['task']} has no "
            "check of its own for a row",
            markup=False,
            highlight=False,
        )
    elif view["complete"]:
        out.print(f"{view['checked']:,} rows checked: {len(view['problems'])} cannot render")
    else:
        out.print(
            f"stopped after {len(view['problems'])} problems at row {view['checked']:,}; "
            "fix these and run it again"
        )


# -- estimate -------------------------------------------------------------------------


def run_estimate(args: argparse.Namespace) -> int:
    if args.template is not None and args.input is None:  # `estimate --template T INPUT`
        args.task, args.input = None, args.task
    if args.batch is not None:
        if args.task is not None or args.input is not None:
            raise CommandError("give either --batch ID or TASK INPUT, not both")
        return _estimate_batch(args)
    if (args.task is None and args.template is None) or args.input is None:
        raise CommandError("estimate needs TASK INPUT (or --template NAME INPUT, or --batch ID)")
    from batchyard.errors import InputError

    with (
        open_yard(args, only_reads=not args.pilot) as yard,
        read_input(args) as items,
    ):
        try:
            found = yard.estimate(
                args.task,
                items,
                params=task_params(args),
                template=args.template,
                pilot=args.pilot,
                concurrency=args.concurrency,
                **spending(args),
            )
        except InputError as exc:
            raise items.locate(exc) from None
    _show(args, found, found.as_dict())
    return 0


def _estimate_batch(args: argparse.Namespace) -> int:
    from batchyard.batch import remaining_payloads

    with open_yard(args, create=False) as yard:
        status = yard.batch(args.batch).status()
        spec = yard.registry.find(status.task)
        if spec is None or spec.estimate is None:
            raise CommandError(f"estimates are for llm batches; {status.id} runs {status.task}")
        found = spec.estimate(
            yard.store,
            status.params,
            remaining_payloads(yard.store, status.id),
            concurrency=args.concurrency,
            pilot=None,
            **({} if status.template is None else {"template": status.template}),
        )
    view = {**found.as_dict(), "batch": status.id, "spent": status.usage_dict()["cost"]}
    _show(args, found, view, status.cost_text())
    return 0


def _show(args: argparse.Namespace, found: Estimate, view: dict[str, Any], spent: str = "") -> None:
    if args.json:
        print_json(view)
        return
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    if "batch" in view:
        table.add_row("batch", f"{view['batch']}: items still to do (spent so far: {spent})")
    table.add_row("model", found.model)
    cached = f", {found.cached:,} answered by the cache (free)" if found.cached else ""
    table.add_row("items", f"{found.items:,}: {found.calls:,} calls{cached}")
    exact = "counted exactly" if found.input_exact else "estimated at ~4 characters a token"
    table.add_row("input", f"{found.input_tokens:,} tokens ({exact})")
    table.add_row(
        "output",
        f"~{found.output_tokens:,.0f} tokens ({found.output_low:,.0f} to "
        f"{found.output_high:,.0f}), from {found.output_source}",
    )
    if found.cost is None:
        table.add_row("cost", f"unknown: no price for {found.model} (--param prices=...)")
    else:
        assert found.price is not None and found.cost_low is not None
        table.add_row(
            "cost",
            f"${found.cost:,.4f}  (${found.cost_low:,.4f} to ${found.cost_high or 0:,.4f})  "
            f"at ${found.price.input:g} in / ${found.price.output:g} out per 1M tokens "
            f"({found.price.source})",
        )
    table.add_row("duration", f"~{format_duration(found.duration)}, bound by {found.bound_by}")
    console().print(table)
