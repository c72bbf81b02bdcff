"""Templates as text: ``template show`` (a version, then every version's batches, success
rate, tokens and cost per item) and ``template diff``."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from batchyard.cli.common import console, when
from batchyard.report_text import percent
from batchyard.templates import Template, TemplateDiff, VersionUsage
from batchyard.templates.diff import TEXT_PARAMS, show

#: A parameter's value is shown on one line up to this many characters.
_SHORT = 60


def print_template(
    shown: Template, versions: list[Template], usage: dict[int, VersionUsage]
) -> None:
    out = console()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    state = " (archived)" if shown.archived else ""
    head.add_row("template", f"{escape(str(shown.ref))}{state}  ({_count(versions)})")
    head.add_row("task", shown.task)
    if shown.description:
        head.add_row("description", escape(shown.description))
    head.add_row("created", f"{when(shown.created_at)} by {escape(shown.author or '-')}")
    texts = []
    for name in sorted(shown.params):
        value = shown.params[name]
        if _is_long(name, value):
            texts.append(name)
            count = len(str(value).splitlines())
            head.add_row(name, f"({count} line{'s' * (count != 1)}, below)")
        else:
            head.add_row(name, escape(show(value)))
    out.print(head)
    for name in texts:
        out.print(f"\n[bold]{name}[/]")
        for line in str(shown.params[name]).splitlines():
            out.print(f"  {escape(line)}")
    out.print()
    out.print(_versions_table(shown, versions, usage))


def _count(versions: list[Template]) -> str:
    return f"{len(versions)} version{'s' * (len(versions) != 1)}"


def _is_long(name: str, value: object) -> bool:
    if not isinstance(value, str):
        return False
    return name in TEXT_PARAMS or "\n" in value or len(value) > _SHORT


def _versions_table(
    shown: Template, versions: list[Template], usage: dict[int, VersionUsage]
) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("version", "created", "by", "batches", "items", "success"):
        table.add_column(column, justify="left" if column in ("created", "by") else "right")
    table.add_column("tokens/item", justify="right")
    table.add_column("cost/item", justify="right")
    table.add_column("description")
    for version in versions:
        used = usage.get(version.version)
        mark = "*" if version.version == shown.version else ""
        label = f"{mark}{version.version}" + (" archived" if version.archived else "")
        table.add_row(
            label,
            when(version.created_at)[:-3],
            escape(version.author or "-"),
            *(_usage_cells(used) if used else ("0", "-", "-", "-", "-")),
            escape(version.description or ""),
        )
    return table


def _usage_cells(used: VersionUsage) -> tuple[str, str, str, str, str]:
    tokens, cost = used.tokens_per_item, used.cost_per_item
    return (
        f"{used.batches:,}",
        f"{used.items:,}",
        percent(used.success_rate),
        "-" if tokens is None else f"{tokens:,.0f}",
        "-" if cost is None else f"${cost:,.6f}",
    )


def print_diff(found: TemplateDiff) -> None:
    out = console()
    texts, changes = found.texts, found.changes
    if not texts and not changes:
        out.print(f"{found.old.ref} and {found.new.ref} have the same parameters")
        return
    for _, lines in texts:
        for line in lines:
            style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
            out.print(escape(line), style=style if not line.startswith(("+++", "---")) else "bold")
    if changes:
        if texts:
            out.print()
        table = Table(box=None, header_style="bold")
        table.add_column("parameter")
        table.add_column(str(found.old.ref))
        table.add_column(str(found.new.ref))
        for change in changes:
            table.add_row(*(escape(cell) for cell in change.cells()))
        out.print(table)
