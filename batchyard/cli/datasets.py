"""Datasets from the command line: ``dataset add | list | show | delete``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    add_json,
    console,
    db_url,
    open_yard,
    positive_int,
    print_json,
    store_exists,
    when,
    wrap,
)
from batchyard.cli.sources import add_selection_options
from batchyard.cli.submit import INPUT_HELP, add_csv_options, read_input

if TYPE_CHECKING:
    from batchyard.records import Dataset, RecordPage

SHOW_JSON = """\
--json prints {"dataset", "count" (the rows that match), "next" (the cursor of the next
page, or null), "rows": [{"key", "position", "data"}]}."""
LIST_JSON = """\
--json prints a JSON array: {"name", "key_field", "rows", "fields": [{"name", "types"}],
"created_at", "updated_at"} per dataset."""


def register(commands: Any) -> None:
    dataset = commands.add_parser(
        "dataset",
        help="stored tables of records to pick a batch's items from",
        description=wrap(
            "Datasets: tables of records kept in the store (leads, topics, ...) that "
            "'submit TASK --dataset NAME --where ...' makes batches from."
        ),
    )
    actions = dataset.add_subparsers(
        title="actions", dest="action", metavar="ACTION", parser_class=type(dataset)
    )
    actions.required = True
    _register_add(actions)
    listing = actions.add_parser(
        "list",
        help="the datasets, with their rows and fields",
        epilog=LIST_JSON,
        formatter_class=RAW,
    )
    add_json(listing)
    listing.set_defaults(run=run_list)
    _register_show(actions)
    delete = actions.add_parser("delete", help="delete a dataset (batches made from it stay)")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(run=run_delete)


def _register_add(actions: Any) -> None:
    add = actions.add_parser(
        "add",
        help="store a file's rows as a dataset",
        description=wrap(
            "Store INPUT's rows as dataset NAME, all or nothing, with the rules of submit: "
            + INPUT_HELP.replace("an item", "a row")
            .replace("item", "row")
            .replace(" unless --open", "")
            .replace("creates no batch", "writes nothing")
        ),
    )
    add.add_argument("name", metavar="NAME", help="letters, digits, '_', '.', '-'")
    add.add_argument("input", metavar="INPUT", help="a .jsonl, .csv or .parquet file, or -")
    add.add_argument(
        "--key-field",
        metavar="FIELD",
        help="the field that gives each row its key (default: id; a row without it is keyed "
        "by its position; a CSV whose header lacks a field named here is refused); appended "
        "rows use the dataset's own",
    )
    mode = add.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add the rows to the dataset")
    mode.add_argument(
        "--replace", action="store_true", help="replace the dataset's rows with these"
    )
    add_csv_options(add)
    add.set_defaults(run=run_add)


def _register_show(actions: Any) -> None:
    show = actions.add_parser(
        "show",
        help="a page of a dataset's rows, filtered and sorted, with the count of matches",
        epilog=SHOW_JSON,
        formatter_class=RAW,
    )
    show.add_argument("name", metavar="NAME")
    add_selection_options(show)
    show.add_argument(
        "--sort", metavar="FIELD[:desc]", help="order by a field (rows without it last)"
    )
    show.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="rows per page (default 20)"
    )
    show.add_argument("--cursor", metavar="C", help="the next page: the cursor a page printed")
    show.add_argument("--fields", metavar="F1,F2,...", help="the columns to show (default: all)")
    add_json(show)
    show.set_defaults(run=run_show)


# -- dataset commands ---------------------------------------------------------------------


def run_add(args: argparse.Namespace) -> int:
    with open_yard(args) as yard, read_input(args) as rows:
        before = 0
        if args.append:
            before = yard.datasets.get(args.name).rows
        options = {} if args.key_field is None else {"key_field": args.key_field}
        dataset = yard.datasets.add(
            args.name, rows, append=args.append, replace=args.replace, **options
        )
    added = dataset.rows - before
    verb = "replaced by" if args.replace else "added to" if args.append else "stored as"
    console(stderr=True).print(
        f"{added:,} row{'s' * (added != 1)} {verb} dataset {dataset.name!r}"
        + (f" ({dataset.rows:,} in all)" if args.append else "")
        + f"; fields: {', '.join(dataset.field_names)}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    if not store_exists(db_url(args)):
        datasets: list[Dataset] = []
    else:
        with open_yard(args, create=False) as yard:
            datasets = yard.datasets.list()
    if args.json:
        print_json([d.as_dict() for d in datasets])
        return 0
    if not datasets:
        console().print("no datasets (add one: batchyard dataset add NAME FILE)")
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ROWS", "KEY", "FIELDS", "UPDATED"):
        table.add_column(column, justify="right" if column == "ROWS" else "left")
    for d in datasets:
        table.add_row(
            d.name, f"{d.rows:,}", d.key_field or "-", ", ".join(d.field_names), when(d.updated_at)
        )
    console().print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        page = yard.datasets.rows(
            args.name,
            args.where,
            keys=args.keys,
            sort=args.sort,
            limit=args.limit,
            cursor=args.cursor,
        )
        dataset = yard.datasets.get(args.name)
    if args.json:
        rows = [{"key": r.key, "position": r.position, "data": r.data} for r in page.rows]
        print_json({"dataset": args.name, "count": page.count, "next": page.next, "rows": rows})
        return 0
    _print_page(dataset, page, args)
    return 0


def _print_page(dataset: Dataset, page: RecordPage, args: argparse.Namespace) -> None:
    import orjson
    from rich.table import Table

    from batchyard.selection import known_field

    fields = dataset.field_names
    if args.fields:
        fields = [known_field(dataset, f.strip()).name for f in args.fields.split(",") if f.strip()]
    keyed = dataset.key_field in fields
    table = Table(box=None, pad_edge=False)
    for column in ([] if keyed else ["KEY"]) + fields:
        table.add_column(column, overflow="fold")
    for row in page.rows:
        cells = [] if keyed else [row.key]
        for name in fields:
            value = row.data.get(name)
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            cells.append("" if name not in row.data else text)
        table.add_row(*cells, style=None)
    out = console()
    if page.rows:
        out.print(table)
    if args.where or args.keys:
        summary = f"{len(page.rows):,} shown; {page.count:,} of {dataset.rows:,} rows match"
    else:
        summary = f"{len(page.rows):,} shown of {dataset.rows:,} rows"
    if page.next:
        summary += f"; next page: --cursor {page.next}"
    console(stderr=True).print(summary, markup=False)


def run_delete(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        rows = yard.datasets.delete(args.name)
    console(stderr=True).print(f"deleted dataset {args.name!r} ({rows:,} rows)")
    return 0
