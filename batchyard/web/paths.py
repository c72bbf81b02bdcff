"""The free-text path parameters of the API's routes and the dashboard's pages, each no
longer than the core makes or takes one: a longer one (or one with a NUL character, which
none has) is a 422 naming it and its limit, before the route reads the store: a problem
from the API (the route's schema says ``maxLength``), an error page from the dashboard
(``pages.route``). Without a limit only a URL over 64 KiB was refused (``limits.py``, a
414)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from batchyard import access
from batchyard.items import MAX_KEY_LENGTH
from batchyard.models import MAX_BATCH_ID
from batchyard.web.schemas import MAX_NAME, NAME, Text

BatchId = Annotated[Text, Path(max_length=MAX_BATCH_ID, description="the batch's id")]
#: A route takes it as ``{key:path}``: a key may hold "/" (sent as is or as %2F, which the
#: server decodes before routing). A route with parts after the key must come before it,
#: as ``:path`` would take those parts too.
ItemKey = Annotated[
    Text, Path(min_length=1, max_length=MAX_KEY_LENGTH, description="the item's key")
]
DatasetName = Annotated[
    str, Path(max_length=MAX_NAME, pattern=NAME, description="the dataset's name")
]
TemplateName = Annotated[
    str, Path(max_length=MAX_NAME, pattern=NAME, description="the template's name")
]
TokenName = Annotated[Text, Path(max_length=access.MAX_NAME, description="the token's name")]
