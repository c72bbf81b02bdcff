"""JSON in and out of the store: orjson for speed, with the strictness of the standard library.

What the standard library's ``json`` refuses, batchyard refuses: orjson is told to pass
datetimes, dataclasses and subclasses of the basic types on, and anything it will not
encode as plain JSON goes to the standard library, which encodes it exactly as
``json.dumps`` would (int dict keys become strings, a ``StrEnum`` its value) or raises.
orjson writes NaN and Infinity as ``null``, so an encoding with ``null`` in it is checked
again by the standard library, which rejects those numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_PLAIN = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Encode as compact JSON text; TypeError or ValueError when it is not JSON."""
    try:
        text = orjson.dumps(value, option=_PLAIN).decode()
    except orjson.JSONEncodeError:
        return _STRICT.encode(value)
    if "null" in text:  # (a str search: several times faster than one in bytes here)
        _STRICT.encode(value)  # raises ValueError for NaN or Infinity
    return text


def dumps_plain(value: Any) -> bytes | None:
    """``value`` as compact JSON in UTF-8 when orjson encodes all of it as ``dumps`` would
    (nothing passed on to the standard library, no NaN or Infinity); None otherwise. One
    call for many items is several times cheaper than ``dumps`` for each."""
    try:
        data = orjson.dumps(value, option=_PLAIN)
    except orjson.JSONEncodeError:
        return None
    if b"null" in data:
        try:
            _STRICT.encode(value)
        except (TypeError, ValueError):
            return None
    return data


def quote(text: str) -> str:
    """A string as a JSON string."""
    return orjson.dumps(text).decode()


#: Decode JSON text (orjson itself, not a wrapper: the worker decodes every payload).
loads: Callable[[str | bytes], Any] = orjson.loads
