"""JSON in and out of the store: orjson for speed, with the strictness of the standard library.

orjson writes NaN and Infinity as ``null``; a payload must not change on the way in, so
any encoding that contains ``null`` is checked again by the standard library, which
rejects those numbers.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Encode as compact JSON text; TypeError or ValueError when it is not JSON."""
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None
    if b"null" in data:
        _STRICT.encode(value)  # raises ValueError for NaN or Infinity
    return data.decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)
