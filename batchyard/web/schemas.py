"""The request bodies the API takes (pydantic, strict: ``false`` is not 0, "3" is not 3;
unknown fields are refused). Answers are the CLI's ``--json`` shapes, built by the core."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from batchyard.clusters import ID_LENGTH
from batchyard.items import MAX_KEY_LENGTH

Json = dict[str, Any]


#: A rate as the API takes it: AMOUNT/PERIOD (the CLI also reads "100 per 10 seconds").
RATE = r"^[1-9][0-9]{0,8}/(s|min|h|day)$"
#: An error cluster's id, or the start of one (``batchyard errors`` shows them).
CLUSTER = rf"^[0-9a-fA-F]{{1,{ID_LENGTH}}}$"
#: The longest dataset or template name: 1 to 100 characters (``records.check_name``,
#: ``templates.library``).
MAX_NAME = 100
#: A template's or a dataset's name (the core's ``check_name`` of each), for paths and bodies.
NAME = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}$"
#: A template version: NAME or NAME@VERSION.
TEMPLATE_REF = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}(@[1-9][0-9]{{0,8}})?$"
#: A dataset condition: FIELD=V, FIELD!=V, FIELD<V, FIELD<=V, FIELD>V, FIELD>=V, FIELD~TEXT.
#: Its value holds no U+0000 or U+0001 (``selection.Condition``: filters read a row's NUL
#: character as U+0001).
CONDITION = r"^[A-Za-z0-9_.-]{1,100}(>=|<=|!=|=|<|>|~)[^\n\x00\x01]{0,1000}$"
#: The same in a URL's query (``GET /datasets/{name}/rows``), its value shorter: the
#: longest query that route's schema allows fits in ``limits.MAX_TARGET``.
QUERY_CONDITION = r"^[A-Za-z0-9_.-]{1,100}(>=|<=|!=|=|<|>|~)[^\n\x00\x01]{0,200}$"
#: Text without a NUL character (U+0000): PostgreSQL's text holds none, so no batch id or
#: key has one (``items.encode``).
NO_NUL = r"^[^\x00]*$"
#: Free text of a request (a body's field, a query or form parameter, a path's part) that
#: the store keeps or looks up: one with a NUL is a 422 naming it, where PostgreSQL would
#: refuse it (a 503). A parameter that defaults to text takes it as
#: ``Annotated[Text, Query(...)] = ""``: FastAPI drops the pattern of ``Text = Query("")``
#: (not of ``Text | None = Query(None)``).
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
#: A key as the core takes one (``items.item_key``): 1 to 512 characters, no NUL.
Key = Annotated[Text, Field(min_length=1, max_length=MAX_KEY_LENGTH)]
#: What ``key_field`` names. A rule over the items' own values, which no schema can say
#: (the field is named beside them), so the document says it in words.
KEY_FIELD = (
    "the field of each item that holds its key: a string of 1 to 512 characters or an "
    "integer (an item without it is keyed by its place); any other value is a 422 naming "
    "the item"
)
#: A webhook: an absolute http(s) URL with a host.
WEBHOOK_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
#: Tokens per minute: a number, or a rate.
TOKEN_RATE = r"^[1-9][0-9]{0,9}(/(s|min|h|day))?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole(cls, value: Any, info: ValidationInfo) -> Any:
        """3.0 is an integer, as JSON Schema has it (strict mode refused it, and schemathesis
        sends it for "integer"); "3" and true still are not."""
        wanted = cls.model_fields[info.field_name or ""].annotation
        if isinstance(value, float) and value.is_integer() and wanted in (int, int | None):
            return int(value)
        return value


class Options(_Strict):
    """A submission's options (those of ``batchyard submit``)."""

    name: Text | None = Field(None, max_length=200)
    concurrency: int | None = Field(None, ge=1, le=100_000)
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout: float | None = Field(None, gt=0)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    metadata: Json | None = None
    params: Json | None = None
    budget: float | None = Field(None, ge=0)
    rate_limit: str | None = Field(None, pattern=RATE, description='e.g. "25/min"')
    tokens_per_minute: str | None = Field(None, pattern=TOKEN_RATE, description='e.g. "90000"')
    max_result_bytes: int | None = Field(None, ge=1)
    key_field: Text | None = Field("id", max_length=200, description=KEY_FIELD)
    open: bool = False
    #: URLs to POST the batch's status to, signed, when it ends, pauses or needs attention.
    # The URL rule of deliveries.py as a pattern (schemathesis met its 422 for any text).
    webhooks: list[Annotated[str, Field(pattern=WEBHOOK_URL)]] = Field(
        default_factory=list, max_length=10
    )


class BatchIn(_Strict):
    """A batch to make: a task (or a template, which names one) and exactly one source of
    items: ``items``, a ``dataset`` (with ``where`` conditions and ``keys``), or ``count``
    (a generation batch). ``options.open`` makes a batch that takes items later."""

    task: Text | None = Field(None, max_length=300)
    template: str | None = Field(None, pattern=TEMPLATE_REF, description="NAME or NAME@VERSION")
    items: list[Json] | None = Field(None, min_length=1)
    dataset: Text | None = Field(None, max_length=200)
    where: list[Annotated[str, Field(pattern=CONDITION)]] = Field(
        default_factory=list, max_length=100
    )
    # At least one: the core refuses an empty list (schemathesis sent one and met its 422).
    keys: list[Key] | None = Field(None, min_length=1)
    count: int | None = Field(None, ge=1, le=10_000_000)
    options: Options = Field(default_factory=Options)


class ItemsIn(_Strict):
    """Items for an open batch."""

    items: list[Json] = Field(min_length=1)
    key_field: Text | None = Field("id", max_length=200, description=KEY_FIELD)


def _failed() -> list[Literal["failed", "cancelled"]]:
    return ["failed"]


class RetryIn(_Strict):
    """Which finished items to send back: ``states`` (failed, cancelled), only ``keys``,
    or only the failed items of an error ``cluster``."""

    # An error cluster's retry takes its failed items only: the schema says so too.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"cluster": {"type": "null"}}},
                {
                    "properties": {
                        "keys": {"type": "null"},
                        "states": {"items": {"const": "failed"}},
                    }
                },
            ]
        }
    )

    states: list[Literal["failed", "cancelled"]] = Field(default_factory=_failed, min_length=1)
    keys: list[Key] | None = None
    cluster: str | None = Field(None, pattern=CLUSTER)


class RerunIn(_Strict):
    """A new batch of this batch's items: all, or those in one state; with its template
    version or another."""

    template: str | None = Field(None, pattern=TEMPLATE_REF)
    state: Literal["all", "failed", "succeeded", "cancelled"] = "all"
    name: Text | None = Field(None, max_length=200)


class TemplateIn(_Strict):
    """Version 1 of a new template: its task (one this server allows) and parameters."""

    name: str = Field(max_length=MAX_NAME, pattern=NAME)
    task: Text = Field(max_length=300)
    params: Json = Field(default_factory=dict)
    description: Text | None = Field(None, max_length=2000)


class TemplateUpdate(_Strict):
    """The next version of a template: only what changes. ``params`` are set over the
    newest version's, ``unset`` removed; ``description`` left out keeps the newest
    version's (null clears it)."""

    params: Json = Field(default_factory=dict)
    unset: list[Text] = Field(default_factory=list, max_length=100)
    description: Text | None = Field(None, max_length=2000)
