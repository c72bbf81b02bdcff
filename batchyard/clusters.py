"""Error clusters: what a failure's signature is (its error class, its message with the
parts that vary blanked, and the task's top frame), and ``ErrorCluster``, a batch's
failures that share one. Pure: the worker makes signatures, the store counts them.

A signature reads ``ValueError: price <num> out of range for <str> @ tasks.py:price``.
Its id is the first ``ID_LENGTH`` hex digits of the SHA-256 of that text: short, and the
same on every machine and in every batch for the same failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import sysconfig
import traceback
from dataclasses import dataclass
from types import TracebackType

from batchyard.models import JSON

#: Hex digits of a signature's id.
ID_LENGTH = 10
#: The longest normalised message kept in a signature (characters).
MAX_TEXT = 200
#: How many clusters a report and ``status --json`` show: the top ones.
TOP_CLUSTERS = 5

_QUOTED = re.compile(r"""(?<![A-Za-z0-9])'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")
#: A quoted HTTP status line ('429 Too Many Requests', as httpx writes it) says what failed.
_STATUS_LINE = re.compile(r"""^['"][1-5]\d\d [A-Za-z][A-Za-z' -]*['"]$""")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b")
_HEX = re.compile(
    r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"
)
_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9][\w-]*")
_DIGIT_RUNS = re.compile(r"\d+")
_NUMBER = re.compile(r"\d+(?:\.\d+)*")
#: A number an HTTP status follows these words: kept, so a 429 and a 500 are two clusters.
_STATUS_BEFORE = re.compile(r"(?:HTTP/?[\d.]*|status(?: code)?|[Ee]rror code:?|code)[ =:]*$|['\"]$")
_SPACE = re.compile(r"\s+")
#: A message that is one quoted field name and nothing else, as a KeyError's is: the name
#: is what failed ('price' missing and 'sku' missing are two bugs), so it stays. A name with
#: a digit ('lead-050', 'a1') is more likely a looked-up value and is blanked.
_FIELD_NAME = re.compile(r"'[A-Za-z_]+'|\"[A-Za-z_]+\"")


@dataclass(frozen=True, slots=True)
class Signature:
    """What a failure is, whatever item or attempt it hit: ``id`` (short, stable) and
    ``text``, the readable form it is a hash of."""

    id: str
    text: str

    @classmethod
    def of_text(cls, text: str) -> Signature:
        return cls(hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH], text)


@dataclass(frozen=True, slots=True)
class ErrorCluster:
    """A batch's failures with one signature.

    ``attempts`` counts every failed attempt with it (retried ones too, even when the item
    succeeded later); ``items`` the items whose failure, as they stand failed now, has it;
    ``share`` is ``items`` over the batch's failed items. ``sample`` is the first message
    seen (in full) and ``sample_key`` its item."""

    id: str
    text: str
    attempts: int
    items: int
    share: float
    first_seen: float
    last_seen: float
    sample: str | None
    sample_key: str | None

    def as_dict(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "text": self.text,
            "attempts": self.attempts,
            "items": self.items,
            "share": self.share,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "sample": self.sample,
            "sample_key": self.sample_key,
        }


def normalise(message: str) -> str:
    """A message with what varies between occurrences blanked: quoted strings ``<str>``,
    uuids ``<uuid>``, hex ``<hex>``, long mixed ids ``<id>``, numbers ``<num>``; words and
    HTTP statuses stay, and so does a message that is only a quoted field name (KeyError's
    'price'). Whitespace is collapsed and the result cut at ``MAX_TEXT``."""
    if _FIELD_NAME.fullmatch(message.strip()):
        return message.strip()
    text = _QUOTED.sub(_quoted, message)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _TOKEN.sub(_long_id, text)
    text = _NUMBER.sub(_number, text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _quoted(match: re.Match[str]) -> str:
    return match.group() if _STATUS_LINE.match(match.group()) else "<str>"


def _long_id(match: re.Match[str]) -> str:
    """A token that is an id rather than a word: letters and digits interleaved (req_8f3a2b1c,
    chatcmpl-9x8y7z) or long with a digit (random base62)."""
    token = match.group()
    if len(token) < 8 or not any(c.isalpha() for c in token):
        return token
    runs = len(_DIGIT_RUNS.findall(token))
    return "<id>" if runs >= 2 or (runs and len(token) >= 20) else token


def _number(match: re.Match[str]) -> str:
    """Blank a number unless it is part of a word (sha256, utf-8, gpt-4o) or an HTTP
    status; a key's number (lead-0100, user_123: three digits or more) is blanked."""
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or before == ".":
        return match.group()
    if before in "-_" and start >= 2 and text[start - 2].isalpha():
        return "<num>" if len(match.group()) >= 3 and not after.isalnum() else match.group()
    if after.isalpha() or after == "_":
        unit = re.match(r"[A-Za-z]+", text[end:])
        rest = text[end + (unit.end() if unit else 0) :]
        if rest[:1].isalnum() or rest[:1] == "_":
            return match.group()  # 3f2a, 4o-mini: part of a token
    if _is_status(match.group(), text[:start]):
        return match.group()
    return "<num>"


def _is_status(number: str, before: str) -> bool:
    return len(number) == 3 and "100" <= number <= "599" and bool(_STATUS_BEFORE.search(before))


def signature(error_type: str, message: str, frame: str | None = None) -> Signature:
    """The signature of a failure: ``Type: normalised message @ frame`` (without the parts
    that are empty). ``message`` may start with ``Type: `` (as an item's error does)."""
    prefix = f"{error_type}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    elif message == error_type:
        message = ""
    text = normalise(message)
    head = f"{error_type}: {text}" if text else error_type
    return Signature.of_text(f"{head} @ {frame}" if frame else head)


def of_exception(exc: BaseException, task_file: str | None = None) -> Signature:
    """The signature of an exception a task raised; ``task_file`` is the file of the task
    function (its frames count as the task's even inside batchyard, like the llm task's)."""
    return signature(type(exc).__name__, str(exc), top_frame(exc.__traceback__, task_file))


def top_frame(tb: TracebackType | None, task_file: str | None = None) -> str | None:
    """``file:function`` of the innermost frame of a traceback in the task's own code: the
    task's file, or any file outside the standard library, installed packages and
    batchyard. Line numbers are left out: they move with every edit. None without one."""
    found = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == task_file or not _is_library(frame.filename):
            found = f"{os.path.basename(frame.filename)}:{frame.name}"
    return found


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {
        paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths
    }
    roots.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(os.path.normcase(root), "") for root in roots)


_LIBRARY = _library_roots()


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string>: not a file of the task's
        return True
    return os.path.normcase(os.path.abspath(filename)).startswith(_LIBRARY)
