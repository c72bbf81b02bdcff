"""The free-text path parameters of the API's routes, each no longer than the core makes or
takes one: a longer one (or an id or key with a NUL character, which none has) is a 422
problem naming it and its limit (the route's schema says ``maxLength``), before the route
reads the store. Without a limit only a URL over 64 KiB
was refused (``limits.py``, a 414)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from batchyard.items import MAX_KEY_LENGTH
from batchyard.models import MAX_BATCH_ID
from batchyard.web.schemas import MAX_NAME, NAME, NO_NUL

BatchId = Annotated[
    str, Path(max_length=MAX_BATCH_ID, pattern=NO_NUL, description="the batch's id")
]
ItemKey = Annotated[
    str, Path(max_length=MAX_KEY_LENGTH, pattern=NO_NUL, description="the item's key")
]
DatasetName = Annotated[
    str, Path(max_length=MAX_NAME, pattern=NAME, description="the dataset's name")
]
TemplateName = Annotated[
    str, Path(max_length=MAX_NAME, pattern=NAME, description="the template's name")
]
