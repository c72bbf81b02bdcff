"""Templates from the command line: ``template create|update|list|show|diff|archive``, and
``rerun`` (a batch again, with the same template version or another)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import (
    RAW,
    STATUS_JSON,
    add_json,
    console,
    db_url,
    open_yard,
    print_json,
    store_exists,
    when,
    wrap,
)
from batchyard.cli.submit import add_param_option, task_params

if TYPE_CHECKING:
    from batchyard.templates import Template, TemplateDiff

TEMPLATE_JSON = """\
--json prints the version: {"name", "version", "ref" (NAME@N), "task", "params",
"description", "author", "archived", "created_at" (unix seconds)}; 'show' adds "versions":
[the same for every version, each with "usage": {"batches", "items", "succeeded",
"failed", "cancelled", "success_rate", "tokens_in", "tokens_out", "cost", "calls",
"cache_hits", "tokens_per_item", "cost_per_item"} or null when no batch ran with it]."""


def register(commands: Any) -> None:
    """Adds template (with its own commands) and rerun."""
    group = commands.add_parser(
        "template",
        help="named, versioned task parameters: create, update, list, show, diff, archive",
        description=wrap(
            "Templates are named, immutable versions of a task's parameters (for the llm "
            "task: the prompt, system prompt, model, max_tokens, temperature, JSON schema, "
            "options). 'submit --template NAME' runs the latest version, NAME@N a given one."
        ),
    )
    actions = group.add_subparsers(title="commands", dest="action", metavar="ACTION")
    actions.required = True
    _register_writes(actions)
    _register_reads(actions)
    _register_rerun(commands)


def _register_writes(actions: Any) -> None:
    create = actions.add_parser(
        "create",
        help="version 1 of a new template",
        description=wrap(
            "Create version 1 of template NAME. The task checks the parameters first (an "
            "unknown one, a prompt that does not compile: exit 2, nothing written)."
        ),
        epilog=TEMPLATE_JSON,
        formatter_class=RAW,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--task", required=True, help="the task, e.g. llm or module:function")
    _add_about(create)
    create.set_defaults(run=run_create)
    update = actions.add_parser(
        "update",
        help="the next version: only the parameters that change",
        description=wrap(
            "Write the next version of NAME: the newest version's parameters, with those "
            "given by --param set and those given by --unset removed."
        ),
        epilog=TEMPLATE_JSON,
        formatter_class=RAW,
    )
    update.add_argument("name", metavar="NAME")
    update.add_argument(
        "--unset", action="append", default=[], metavar="KEY", help="drop a parameter"
    )
    _add_about(update)
    update.set_defaults(run=run_update)
    archive = actions.add_parser(
        "archive",
        help="hide a version from NAME and listings (batches still read it)",
        description=wrap(
            "Archive NAME@N: 'submit --template NAME' and 'template list' pass it over and "
            "submitting it fails; batches that ran with it still show it. Nothing is deleted."
        ),
    )
    archive.add_argument("ref", metavar="NAME@N")
    add_json(archive)
    archive.set_defaults(run=run_archive)


def _add_about(parser: argparse.ArgumentParser) -> None:
    add_param_option(parser)
    parser.add_argument("--description", metavar="TEXT", help="what this version is for")
    parser.add_argument("--author", metavar="NAME", help="who made it (default: the OS user)")
    add_json(parser)


def _register_reads(actions: Any) -> None:
    listing = actions.add_parser("list", help="the latest version of every template")
    listing.add_argument("--archived", action="store_true", help="archived versions too")
    add_json(listing)
    listing.set_defaults(run=run_list)
    show = actions.add_parser(
        "show",
        help="a version, and every version's batches, success rate, tokens and cost",
        description=wrap(
            "Show NAME's latest version (NAME@N: that one), its parameters and prompt, and "
            "for every version the batches that ran with it: items, success rate, mean "
            "tokens and cost per item (over items not answered by the response cache)."
        ),
        epilog=TEMPLATE_JSON,
        formatter_class=RAW,
    )
    show.add_argument("ref", metavar="NAME[@N]")
    add_json(show)
    show.set_defaults(run=run_show)
    diff = actions.add_parser(
        "diff",
        help="what changed between two versions",
        description=wrap(
            "A unified diff of the prompts (and any other text that changed), then a table "
            "of the other parameters that changed, from version OLD to NEW."
        ),
    )
    diff.add_argument("name", metavar="NAME")
    diff.add_argument("old", metavar="OLD", type=int)
    diff.add_argument("new", metavar="NEW", type=int)
    add_json(diff)
    diff.set_defaults(run=run_diff)


def _register_rerun(commands: Any) -> None:
    rerun = commands.add_parser(
        "rerun",
        help="a new batch with a batch's items, the same template version or another",
        description=wrap(
            "Create a new batch with the items of batch ID (all, or only the failed ones) and "
            "its options, linked to it ('compare NEW' shows both). Items are copied inside "
            "the store. With --template the new batch runs that version, keeping the "
            "parameters ID's command line gave; answers the response cache holds are free."
        ),
        epilog=STATUS_JSON.replace("--json prints", "--json prints, once queued,"),
        formatter_class=RAW,
    )
    rerun.add_argument("batch", metavar="ID", help="the batch to run again")
    rerun.add_argument("--template", metavar="NAME[@N]", help="run with this template version")
    rerun.add_argument(
        "--state", choices=("all", "failed"), default="all", help="which items (default: all)"
    )
    rerun.add_argument("--name", help="the new batch's name (default: the old one's)")
    add_json(rerun)
    rerun.set_defaults(run=run_rerun)


# -- handlers ---------------------------------------------------------------------------


def run_create(args: argparse.Namespace) -> int:
    with open_yard(args) as yard:
        made = yard.templates.create(
            args.name,
            args.task,
            task_params(args),
            description=args.description,
            author=args.author,
        )
    return _written(args, made, "created")


def run_update(args: argparse.Namespace) -> int:
    from batchyard.models import UNSET

    with open_yard(args, create=False) as yard:
        made = yard.templates.update(
            args.name,
            task_params(args),
            unset=args.unset,
            description=UNSET if args.description is None else args.description,
            author=args.author,
        )
    return _written(args, made, "written")


def run_archive(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        made = yard.templates.archive(args.ref)
    if args.json:
        print_json(made.as_dict())
    else:
        print(f"{made.ref} archived: batches that ran with it still show it")
    return 0


def _written(args: argparse.Namespace, made: Template, verb: str) -> int:
    if args.json:
        print_json(made.as_dict())
    else:
        by = f", by {made.author}" if made.author else ""
        print(f"{made.ref} {verb} (task {made.task}{by})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    found: list[Template] = []
    if store_exists(db_url(args)):  # no store yet: no templates, and no file made for that
        with open_yard(args, create=False) as yard:
            found = yard.templates.list(archived=args.archived)
    if args.json:
        print_json([t.as_dict() for t in found])
        return 0
    if not found:
        console().print("no templates")
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("template", "task", "created", "by", "description"):
        table.add_column(column)
    for t in found:
        ref = f"{t.ref} (archived)" if t.archived else str(t.ref)
        table.add_row(ref, t.task, when(t.created_at)[:-3], t.author or "-", t.description or "")
    console().print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from batchyard.cli.template_views import print_template
    from batchyard.views import template_view

    with open_yard(args, create=False) as yard:
        shown = yard.templates.get(args.ref)
        versions = yard.templates.versions(shown.name)
        usage = yard.templates.usage(shown.name)
    if args.json:
        print_json(template_view(shown, versions, usage))
    else:
        print_template(shown, versions, {u.version: u for u in usage})
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from batchyard.cli.template_views import print_diff

    with open_yard(args, create=False) as yard:
        found: TemplateDiff = yard.templates.diff(args.name, args.old, args.new)
    if args.json:
        print_json(found.as_dict())
    else:
        print_diff(found)
    return 0


def run_rerun(args: argparse.Namespace) -> int:
    from batchyard.views import status_view

    with open_yard(args, create=False) as yard:
        batch = yard.batch(args.batch).rerun(
            template=args.template, state=args.state, name=args.name
        )
        status = batch.status()
    if args.json:
        print_json(status_view(status, time.time()))
        return 0
    total = status.counts.total
    runs = f"template {status.template}" if status.template else f"task {status.task}"
    console(stderr=True).print(
        f"{total:,} item{'s' * (total != 1)} of {args.batch} queued as {status.id} ({runs})"
    )
    print(status.id)
    sys.stdout.flush()
    return 0
