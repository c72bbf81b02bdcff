"""``batchyard tasks [MODULE]``: the built-in tasks, or the tasks a module offers."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from batchyard.cli.common import RAW, add_json, console, print_json, wrap

if TYPE_CHECKING:
    from batchyard.catalog import TaskEntry

#: The task ``batchyard demo`` runs, listed beside the built-ins: it can be submitted too.
DEMO_TASK = "batchyard.demo:score_lead"

TASKS_JSON = """\
--json prints a JSON array, one object per task:
  {"name" (what to give submit or run), "description" (its docstring's first paragraph),
   "decorated" (marked with @task), "is_async", "concurrency", "max_attempts", "timeout"
   (s or null), "rate_limit"}"""


def register(commands: Any) -> None:
    tasks = commands.add_parser(
        "tasks",
        help="the built-in tasks, or the tasks a module offers",
        description=wrap(
            "Without MODULE: the built-in tasks (name and what they do) and the demo's "
            "task. With MODULE (a "
            "module name such as 'tasks', or a file such as tasks.py, found from the current "
            "folder): the functions it offers as tasks, each named as submit takes it "
            "(module:function). Those are the functions marked with @task, and the plain "
            "public functions the module defines that take an item (run with the default "
            "options); with __all__, only the names it lists. MODULE is imported, so its "
            "top-level code runs."
        ),
        epilog=TASKS_JSON,
        formatter_class=RAW,
    )
    tasks.add_argument("module", metavar="MODULE", nargs="?", help="a module or a .py file")
    add_json(tasks)
    tasks.set_defaults(run=run_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    from batchyard.catalog import builtin_tasks, module_of, module_tasks, named_task

    if args.module is None:  # the demo's task is one a newcomer can submit at once
        entries = [*builtin_tasks(), named_task(DEMO_TASK)]
    else:
        entries = module_tasks(args.module)
    if args.json:
        print_json([entry.as_dict() for entry in entries])
        return 0
    if not entries:
        print(
            f"module {module_of(args.module)!r} offers no tasks: no @task functions and no "
            "public function of its own that takes an item",
            file=sys.stderr,
        )
        return 1
    _print_tasks(entries)
    return 0


def _print_tasks(entries: list[TaskEntry]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    table.add_column("task", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("description")
    for entry in entries:
        kind = "@task" if entry.decorated else "function"
        table.add_row(
            entry.name, kind, Text(entry.description or "-", overflow="ellipsis", no_wrap=True)
        )
    out = console()
    if not out.is_terminal:
        out.width = 200
    out.print(table)
