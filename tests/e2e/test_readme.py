"""Every tour of README.md, run as written in a fresh folder, its output compared with what the
README shows, so the README cannot drift from the code.

The README drives this test with HTML comments (invisible on GitHub) before a fenced block:

- ``<!-- readme-test: tour examples/cli -->`` starts a tour: a fresh folder holding a copy of
  that folder's files (``tour NAME``, NAME no folder of the repository: an empty folder;
  ``tour examples/cli as server``: a second tour from one folder, under its own name).
  The blocks that follow run in it, in order, sharing one shell (variables and ``$?`` carry
  over) and one set of batch ids.
- ``<!-- readme-test: skip (why) -->``: the next block is not run; the reason is required.
- ``<!-- readme-test: background (why) -->``: the next console block's commands run in the
  background until the tour ends, like a command ending in ``&``.
- ``<!-- readme-test: stopped -->``: the latest background command gets SIGTERM, and the
  next ``text`` block is all it printed.

In a ``console`` block, ``$ `` starts a command (continued over lines while a quote is open)
and the lines up to the next ``$ `` are its output, stdout and stderr as a terminal shows them.
A ``python`` block whose first line is ``# NAME`` is a listing of the tour folder's file NAME
and must equal it; any other python block runs (``python -c``) in the tour folder, and a
``text`` block right after it is its output. Other ``text`` blocks are illustrations.

Output is compared line by line after collapsing runs of spaces, with what varies from run
to run (batch ids, timestamps, durations, clocks, rates, costs, versions, absolute paths)
matched by pattern, not by value. A line ``...`` in the README stands for any number of lines,
and ``...`` inside a line for any text. Batch ids are bound on first sight: the id a README
output shows is the id the run printed there, and the README's later commands run with it.
Everything else (messages, counts, columns, the number of lines) must match.

A failing comparison names the README line and shows a diff; the fix is a README edit.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
COMMAND_TIMEOUT = 60.0

_MARK = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->")
_FENCE = re.compile(r"^```(\w*)\s*$")
_ID = r"batch_\d+_[0-9a-f]{8}"
#: What varies between runs, as (pattern in the README, pattern it matches in the output).
_VOLATILE = [
    (_ID, _ID),
    (
        r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?",
        r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?",
    ),
    (r"\d+\.\d+\.\d+", r"\d+\.\d+\.\d+"),  # a version
    (r"\d[\d,]*(?:\.\d+)? items/s", r"\d[\d,]*(?:\.\d+)? items/s"),
    (r"~?\d[\d,]*(?:\.\d+)? ?(?:ms|s)\b", r"~?\d[\d,]*(?:\.\d+)? ?(?:ms|s)\b"),
    (r"(?:\d+:)?\d+:\d\d\b|--:--", r"(?:(?:\d+:)?\d+:\d\d\b|--:--)"),
    (r"\$\d[\d,]*(?:\.\d+)?", r"\$\d[\d,]*(?:\.\d+)?"),
    (r'"/(?:[^"/]+/)*', r'"/(?:[^"]*/)?'),  # an absolute path, up to its file name
    (r"\.\.\.", r".*?"),
]
_TOKENS = re.compile("|".join(f"({readme})" for readme, _ in _VOLATILE))


@dataclass
class Block:
    lang: str
    lines: list[str]
    line: int  # the README line of the block's first content line
    marks: dict[str, str]


@dataclass
class Command:
    text: str
    expected: list[str]
    line: int
    background: bool


@dataclass
class Tour:
    name: str
    source: str  # a folder of the repository to start from, or a name for an empty folder
    line: int
    blocks: list[Block] = field(default_factory=list)


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the readme-test marks just before it."""
    blocks: list[Block] = []
    marks: dict[str, str] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if found := _MARK.search(line):
            marks[found.group(1)] = found.group(2)
        elif fence := _FENCE.match(line):
            start, body = number, []
            while number < len(lines) and not lines[number].startswith("```"):
                body.append(lines[number])
                number += 1
            number += 1
            blocks.append(Block(fence.group(1), body, start + 1, marks))
            marks = {}
    return blocks


def parse_tours(text: str) -> list[Tour]:
    tours: list[Tour] = []
    for block in parse_blocks(text):
        if "tour" in block.marks:
            source = block.marks["tour"]
            assert source, f"README.md:{block.line}: readme-test: tour needs a folder or a name"
            source, _, name = source.partition(" as ")
            tours.append(Tour(name or Path(source).name, source, block.line))
        if block.lang in ("console", "python", "text") and "skip" not in block.marks:
            if not tours and block.lang != "text":
                raise AssertionError(
                    f"README.md:{block.line}: a {block.lang} block before any tour; mark it "
                    "<!-- readme-test: tour FOLDER --> or <!-- readme-test: skip (why) -->"
                )
            if tours:
                tours[-1].blocks.append(block)
        elif "skip" in block.marks and not block.marks["skip"].strip("() "):
            raise AssertionError(f"README.md:{block.line}: readme-test: skip needs a reason")
    return tours


def _is_complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote, or a trailing backslash
        return False
    return True


def parse_console(block: Block) -> list[Command]:
    commands: list[Command] = []
    lines = block.lines
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            raise AssertionError(f"README.md:{block.line + index}: output before any command")
        start, text = index, line[2:]
        index += 1
        while not _is_complete(text) and index < len(lines):
            text += "\n" + lines[index]
            index += 1
        expected: list[str] = []
        while index < len(lines) and not lines[index].startswith("$ "):
            expected.append(lines[index])
            index += 1
        background = "background" in block.marks or text.rstrip().endswith("&")
        commands.append(Command(text, expected, block.line + start, background))
    return commands


def _squash(line: str) -> str:
    return " ".join(line.split())


def _clean(output: str) -> list[str]:
    lines = [_squash(line) for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


class Ids:
    """The README's batch ids and the ids the run printed in their place, one to one."""

    def __init__(self) -> None:
        self.actual: dict[str, str] = {}

    def pattern(self, line: str, known: dict[str, str], unbound: list[str]) -> re.Pattern[str]:
        """A README output line as a pattern; ``unbound`` gets the README ids it captures."""
        parts: list[str] = []
        position = 0
        for token in _TOKENS.finditer(line):
            parts.append(re.escape(line[position : token.start()]))
            position = token.end()
            group = token.lastindex or 0
            if group == 1 and token.group() in known:
                parts.append(re.escape(known[token.group()]))
            elif group == 1:
                unbound.append(token.group())
                parts.append(f"({_ID})")
            else:
                parts.append(_VOLATILE[group - 1][1])
        parts.append(re.escape(line[position:]))
        return re.compile("".join(parts))

    def match_line(
        self, expected: str, actual: str, bound: dict[str, str]
    ) -> dict[str, str] | None:
        """``bound`` and the ids this line binds, if it matches."""
        unbound: list[str] = []
        found = self.pattern(expected, self.actual | bound, unbound).fullmatch(actual)
        if found is None:
            return None
        bound = dict(bound)
        for readme, run in zip(unbound, found.groups(), strict=True):
            if bound.setdefault(readme, run) != run:
                return None
        return bound

    def bind(self, bound: dict[str, str], where: str) -> None:
        for readme, run in bound.items():
            other = next((r for r, a in self.actual.items() if a == run and r != readme), None)
            assert other is None, f"{where}: batch {run} appears as both {other} and {readme}"
            self.actual[readme] = run

    def substitute(self, command: str, where: str) -> str:
        for readme in re.findall(_ID, command):
            assert readme in self.actual, (
                f"{where}: {readme} is not the id of a batch this tour showed earlier"
            )
            command = command.replace(readme, self.actual[readme])
        return command


def match_lines(
    ids: Ids, expected: list[str], actual: list[str], furthest: list[int]
) -> dict[str, str] | None:
    """Bindings under which ``actual`` matches ``expected`` (``...`` lines are any lines)."""

    def walk(e: int, a: int, bound: dict[str, str]) -> dict[str, str] | None:
        furthest[0] = max(furthest[0], e)
        if e == len(expected):
            return bound if a == len(actual) else None
        if expected[e] == "...":
            for skip in range(a, len(actual) + 1):
                if (done := walk(e + 1, skip, bound)) is not None:
                    return done
            return None
        if a == len(actual):
            return None
        got = ids.match_line(expected[e], actual[a], bound)
        return None if got is None else walk(e + 1, a + 1, got)

    return walk(0, 0, {})


def compare(
    ids: Ids, expected_raw: list[str], output: str, first_line: int, what: str
) -> str | None:
    """None if ``output`` matches the README's ``expected_raw``, else a report naming the line."""
    expected, actual = _clean("\n".join(expected_raw)), _clean(output)
    furthest = [0]
    bound = match_lines(ids, expected, actual, furthest)
    if bound is not None:
        ids.bind(bound, f"README.md:{first_line}")
        return None
    # The README's ids still stand for the run's, in order of appearance, so that the tour
    # goes on and one run reports every block that drifted.
    readme_ids = [
        i for i in dict.fromkeys(re.findall(_ID, "\n".join(expected))) if i not in ids.actual
    ]
    run_ids = [i for i in dict.fromkeys(re.findall(_ID, output)) if i not in ids.actual.values()]
    with contextlib.suppress(AssertionError):
        ids.bind(dict(zip(readme_ids, run_ids, strict=False)), f"README.md:{first_line}")
    at = min(furthest[0], max(len(expected) - 1, 0))
    offset = next(
        (i for i, raw in enumerate(expected_raw) if expected and _squash(raw) == expected[at]), 0
    )
    diff = "\n".join(difflib.unified_diff(expected, actual, "README", "actual output", lineterm=""))
    return (
        f"README.md:{first_line + offset}: the output of {what} differs from the README "
        f"(spaces collapsed; volatile values are patterns):\n{diff}"
    )


class Shell:
    """One bash for a tour: each command's output (stdout and stderr, in order) and status."""

    def __init__(self, folder: Path, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.count = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _send(self, script: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(script + "\n")
        self.proc.stdin.flush()

    def run(self, command: str) -> str:
        self.count += 1
        marker = f"__readme_test_done_{self.count}__"
        # Braces, not a subshell: variables set by one command are there for the next; the
        # status is restored after the marker so that `echo $?` reports the command's own.
        self._send(f"{{ {command}\n}} </dev/null 2>&1\n__rc=$?; echo; echo {marker}; (exit $__rc)")
        out: list[str] = []
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no end within {COMMAND_TIMEOUT} s: {command}") from None
            if line.rstrip("\n") == marker:
                return "".join(out)
            out.append(line)

    def start(self, command: str) -> tuple[Path, int]:
        """Run a command in the background, its output kept in a log of its own."""
        log = self.logs / f"background-{self.count + 1}.log"
        command = command.rstrip().removesuffix("&")
        # A simple command started with & is its own process: $! is the command's pid.
        pid = int(self.run(f"{command} </dev/null >{shlex.quote(str(log))} 2>&1 & echo $!"))
        if port := re.search(r"--port (\d+)", command):
            _wait_for_port(int(port.group(1)), log)
        return log, pid

    def close(self) -> None:
        # The background commands get SIGTERM first, as a user's Ctrl-C or kill would.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # stdin: bash may be gone already
                    pipe.close()


def _alive(pid: int) -> bool:
    """Whether the shell's child ``pid`` still runs (a zombie the shell has not reaped is done)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][:1]
    except OSError:
        return False
    return state != "Z"


def _wait_for_port(port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}: {log.read_text()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment() -> dict[str, str]:
    # What a reader's shell would not have: this test's store and key, forced colours or widths.
    unset = ("BATCHYARD_DB", "OPENAI_API_KEY", "FORCE_COLOR", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr in the order written, as on a terminal
    return env


def _ports(tour: Tour) -> dict[str, str]:
    """The README's fixed ports, each replaced by a free one: tests may run side by side."""
    text = "\n".join(line for block in tour.blocks for line in block.lines)
    return {port: str(_free_port()) for port in set(re.findall(r"--port (\d+)", text))}


def _with_ports(command: str, ports: dict[str, str]) -> str:
    for readme, free in ports.items():
        command = re.sub(rf"(?<=[ :]){readme}\b", free, command)
    return command


class Runner:
    def __init__(self, tour: Tour, folder: Path, logs: Path) -> None:
        self.tour, self.folder = tour, folder
        self.env = _environment()
        self.shell = Shell(folder, logs, self.env)
        self.ids = Ids()
        self.ports = _ports(tour)
        self.failures: list[str] = []
        self.background: list[tuple[str, Path, int]] = []  # command, log, pid

    def check(self, expected: list[str], output: str, first_line: int, what: str) -> None:
        for readme, free in self.ports.items():  # a server says where it listens
            output = re.sub(rf"(?<=[ :]){free}\b", readme, output)
        if failure := compare(self.ids, expected, output, first_line, what):
            self.failures.append(failure)

    def console(self, block: Block) -> None:
        for command in parse_console(block):
            where = f"README.md:{command.line}"
            text = _with_ports(self.ids.substitute(command.text, where), self.ports)
            if command.background:
                assert not _clean("\n".join(command.expected)), (
                    f"{where}: a background command shows no output"
                )
                self.background.append((command.text, *self.shell.start(text)))
                continue
            try:
                output = self.shell.run(text)
            except AssertionError as exc:  # a command that never ends: a live view, a server
                raise AssertionError(
                    f"{where}: {exc}; run it in the background or skip it"
                ) from None
            self.check(command.expected, output, command.line + 1, f"`$ {command.text}`")

    def stopped(self, block: Block) -> None:
        """SIGTERM to the latest background command; its whole output is the block's."""
        assert self.background, f"README.md:{block.line}: no background command to stop"
        command, log, pid = self.background.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"README.md:{block.line}: `{command}` did not stop on SIGTERM"
        self.check(block.lines, log.read_text(), block.line, f"`$ {command}` (after SIGTERM)")

    def listing(self, block: Block, name: str) -> None:
        path = self.folder / name
        assert path.exists(), f"README.md:{block.line}: the tour's folder has no {name}"
        shown = "\n".join(block.lines).rstrip()
        assert shown == path.read_text().rstrip(), (
            f"README.md:{block.line}: the listing of {name} differs from {self.tour.source}/{name}"
        )

    def python(self, block: Block, output: Block | None) -> None:
        done = subprocess.run(
            [sys.executable, "-c", "\n".join(block.lines)],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        where = f"README.md:{block.line}"
        if output is None:
            assert done.returncode == 0, f"{where}: the python block failed:\n{done.stdout}"
            return
        self.check(output.lines, done.stdout, output.line, f"the python block at {where}")

    def run(self) -> None:
        blocks = self.tour.blocks
        for index, block in enumerate(blocks):
            after = blocks[index + 1] if index + 1 < len(blocks) else None
            if block.lang == "console":
                self.console(block)
            elif block.lang == "text" and "stopped" in block.marks:
                self.stopped(block)
            elif block.lang == "python" and (name := _listing_name(block)):
                self.listing(block, name)
            elif block.lang == "python":
                adjacent = after is not None and after.lang == "text" and _adjacent(block, after)
                self.python(block, after if adjacent else None)


def _listing_name(block: Block) -> str | None:
    first = block.lines[0] if block.lines else ""
    found = re.fullmatch(r"# ([\w.-]+\.\w+)", first.strip())
    return found.group(1) if found else None


def _adjacent(block: Block, after: Block) -> bool:
    lines = README.read_text().splitlines()
    between = lines[block.line - 1 + len(block.lines) + 1 : after.line - 2]
    return not any(line.strip() for line in between)


TOURS = parse_tours(README.read_text())


def test_the_readme_has_tours() -> None:
    names = [tour.name for tour in TOURS]
    assert set(names) >= {"demo", "cli", "llm", "python"}, names
    assert len(set(names)) == len(names), names


@pytest.mark.parametrize("tour", TOURS, ids=[tour.name for tour in TOURS])
def test_tour(tour: Tour, tmp_path: Path) -> None:
    folder = tmp_path / "tour"
    if (ROOT / tour.source).is_dir():
        shutil.copytree(ROOT / tour.source, folder)
    else:
        folder.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    runner = Runner(tour, folder, logs)
    try:
        runner.run()
    except AssertionError as exc:  # the tour cannot go on: shown after what drifted before it
        runner.failures.append(str(exc))
    finally:
        runner.shell.close()
    if runner.failures:
        pytest.fail("\n\n".join(runner.failures), pytrace=False)


# The comparison itself, on made-up output: what it forgives and what it does not.

A, B = "batch_1795336023_aafb1e78", "batch_1796092767_c10b0324"


def test_what_varies_matches_whatever_its_value() -> None:
    readme = [
        f"[0:03] {A} done in 3.7 s (53.40 items/s), mean 52 ms, $0.0784, ETA --:--",
        'at 2026-11-22 08:30:13 in File "/tmp/tour/tasks.py", genai-prices 0.2.3',
    ]
    output = (
        f"[1:12:03] {B}  done in 12 s (1,053.4 items/s),  mean 1,052 ms, $12.0001, ETA 0:02\n"
        'at 2026-12-01 02:39:28 in File "/tmp/pytest-7/tour/tasks.py", genai-prices 0.3.0\n'
    )
    ids = Ids()
    assert compare(ids, readme, output, 10, "x") is None
    assert ids.actual == {A: B}
    assert ids.substitute(f"batchyard report {A}", "here") == f"batchyard report {B}"


@pytest.mark.parametrize(
    "output",
    [
        "items 200: 196 succeeded, 4 failed, 1 cancelled\nwrote 200 items",  # a changed count
        "items 200: 196 succeeded, 4 failed, 0 cancelled\nwrote 200 results",  # a changed word
        "items 200: 196 succeeded, 4 failed, 0 cancelled",  # a missing line
        "items 200: 196 succeeded, 4 failed, 0 cancelled\nwrote 200 items\nsaved",  # a new one
        "items 200: 196 succeeded, 4 failed, 0 cancelled, 0 lost\nwrote 200 items",  # a column
    ],
)
def test_a_changed_message_count_line_or_column_fails(output: str) -> None:
    readme = ["items       200: 196 succeeded, 4 failed, 0 cancelled", "wrote 200 items"]
    failure = compare(Ids(), readme, output, 40, "`$ batchyard report`")
    assert failure is not None
    assert failure.startswith("README.md:4")
    assert "--- README\n+++ actual output" in failure


def test_the_failure_names_the_first_readme_line_that_differs() -> None:
    failure = compare(Ids(), ["one", "two", "three"], "one\ntwo\n3", 40, "x")
    assert failure is not None
    assert failure.startswith("README.md:42: the output of x differs")


def test_dots_stand_for_any_lines_or_any_text() -> None:
    readme = ["first", "...", "last (choose from ...)"]
    assert compare(Ids(), readme, "first\nlast (choose from a, b)", 1, "x") is None
    assert compare(Ids(), readme, "first\n1\n2\nlast (choose from a)", 1, "x") is None
    assert compare(Ids(), readme, "first\n1\n2", 1, "x") is not None


def test_a_readme_id_is_one_batch_throughout() -> None:
    ids = Ids()
    assert compare(ids, [f"batch {A}"], f"batch {B}", 1, "x") is None
    assert compare(ids, [f"again {A}"], "again batch_1796092767_00000000", 2, "x") is not None
    with pytest.raises(AssertionError, match="appears as both"):
        compare(ids, ["batch batch_1795336030_b35739d8"], f"batch {B}", 3, "x")
    with pytest.raises(AssertionError, match="not the id of a batch this tour showed"):
        ids.substitute("batchyard logs batch_1795336213_642cebba lead-050", "README.md:9")


def test_a_command_goes_on_while_a_quote_is_open() -> None:
    block = Block(
        "console",
        ['$ OPTS="--a 1', '    --b 2"', "$ echo $OPTS  # a comment's quote", "--a 1 --b 2"],
        5,
        {},
    )
    first, second = parse_console(block)
    assert (first.text, first.expected, first.line) == ('OPTS="--a 1\n    --b 2"', [], 5)
    assert (second.expected, second.line, second.background) == (["--a 1 --b 2"], 7, False)
