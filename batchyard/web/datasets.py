"""The dataset routes (``batchyard dataset``): list, show, a page of rows, load one from an
uploaded file, delete one.

Datasets have no owner: any caller reads every dataset. An operator loads a new one or
appends rows to one; replacing a dataset's rows or deleting it takes an admin, since
other owners' batches may be made from it."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import StringConstraints

from batchyard.columns import TYPES
from batchyard.errors import DatasetNotFound
from batchyard.inputs import FORMATS
from batchyard.records import Dataset
from batchyard.web import uploads
from batchyard.web.auth import Caller, admin, caller, operator, yard_of
from batchyard.web.paths import DatasetName
from batchyard.web.problems import Problem, responses
from batchyard.web.schemas import KEY_FIELD, NAME, QUERY_CONDITION
from batchyard.yard import Yard

router = APIRouter(tags=["datasets"])
_READ = responses(401, 404, 422, 503)
_LOADED: dict[int | str, dict[str, Any]] = {
    200: {"description": "rows appended, or the rows replaced"}
}
_CSV_TYPE = rf"[A-Za-z0-9_.-]{{1,100}}=({'|'.join(TYPES)})"
#: The form fields of a dataset upload, beside ``file``.
FORM_FIELDS = ("name", "format", "csv_types", "key_field", "mode")
Mode = Literal["create", "append", "replace"]
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name", "format"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "pattern": NAME},
                        "format": {
                            "type": "string",
                            "enum": list(FORMATS),
                            "description": "may be left out when the file's name ends .jsonl, "
                            ".ndjson, .csv or .parquet",
                        },
                        "csv_types": {
                            "type": "string",
                            "pattern": rf"^{_CSV_TYPE}(,{_CSV_TYPE})*$",
                            "description": "CSV column types: employees=int,score=float",
                        },
                        "key_field": {
                            "type": "string",
                            "description": f"{KEY_FIELD} (default: id)",
                        },
                        "mode": {
                            "type": "string",
                            "enum": ["create", "append", "replace"],
                            "description": "create (default); replace needs an admin",
                        },
                    },
                }
            }
        },
    }
}


@router.get("/datasets", responses=_READ)
def list_datasets(request: Request, _: Caller = Depends(caller)) -> list[dict[str, Any]]:
    """Every dataset by name, with its rows and fields (``dataset list --json``)."""
    return [d.as_dict() for d in yard_of(request).datasets.list()]


@router.get("/datasets/{name}", responses=_READ)
def get_dataset(request: Request, name: DatasetName, _: Caller = Depends(caller)) -> dict[str, Any]:
    """A dataset: its key field, number of rows, and fields with the JSON types they hold."""
    return yard_of(request).datasets.get(name).as_dict()


@router.get("/datasets/{name}/rows", responses=_READ)
def dataset_rows(
    request: Request,
    name: DatasetName,
    # Patterns say what the selection's parser takes (schemathesis met its 422s). The
    # lengths keep the longest query in a URL (limits.MAX_TARGET; 61.5 KiB with every
    # character encoded at its longest): a longer selection goes in a batch's JSON body.
    where: list[Annotated[str, StringConstraints(pattern=QUERY_CONDITION)]] = Query(
        [], max_length=20, description="FIELD=V, FIELD!=V, FIELD<V, FIELD>=V, FIELD~TEXT, F=A|B"
    ),
    keys: str | None = Query(
        None,
        max_length=3000,
        pattern=r"^[A-Za-z0-9_.@:-]+(,[A-Za-z0-9_.@:-]+)*$",
        description="only these keys: K1,K2",
    ),
    sort: str | None = Query(
        None, pattern=r"^[A-Za-z0-9_.-]{1,100}(:(asc|desc))?$", description="FIELD or FIELD:desc"
    ),
    limit: int = Query(20, ge=1, le=1000),
    cursor: str | None = Query(
        None, max_length=2000, pattern=r"^[A-Za-z0-9_-]+$", description="the previous page's next"
    ),
    _: Caller = Depends(caller),
) -> dict[str, Any]:
    """A page of the rows every ``where`` condition holds for, with the count of all that
    match and the cursor of the next page (``dataset show --json``). Runs in the store:
    only the page's rows are read."""
    wanted = None if keys is None else [k.strip() for k in keys.split(",") if k.strip()]
    page = yard_of(request).datasets.rows(
        name, where, keys=wanted, sort=sort, limit=limit, cursor=cursor
    )
    rows = [{"key": r.key, "position": r.position, "data": r.data} for r in page.rows]
    return {"dataset": name, "count": page.count, "next": page.next, "rows": rows}


@router.post(
    "/datasets",
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses=_LOADED | responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
)
async def load_dataset(
    request: Request, response: Response, who: Caller = Depends(operator)
) -> dict[str, Any]:
    """Store an uploaded JSONL, CSV or Parquet file's rows as a dataset, all or nothing
    (multipart: ``file``, ``name``, and optionally ``format``, ``csv_types``, ``key_field``,
    ``mode``). A bad line is a 422 naming it; a name in use is a 409 (``mode=append`` adds
    rows, ``mode=replace``, for an admin, replaces them). Answers the dataset, with
    ``added``."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != (
        "multipart/form-data"
    ):
        raise Problem(415, "send the dataset as a file: multipart/form-data with 'file'")
    async with uploads.upload(request, FORM_FIELDS) as (fields, rows):
        name, mode = _name(fields), _mode(fields, who)
        options = {"key_field": fields["key_field"]} if "key_field" in fields else {}
        loaded, added = await run_in_threadpool(_load, yard_of(request), name, mode, rows, options)
    response.status_code = 201 if mode == "create" else 200
    response.headers["Location"] = f"{request.url.path}/{loaded.name}"
    return {**loaded.as_dict(), "added": added}


def _name(fields: dict[str, str]) -> str:
    name = fields.get("name")
    if name is None:
        raise Problem(422, "the upload needs the form field 'name'", field="name")
    return name


def _mode(fields: dict[str, str], who: Caller) -> Mode:
    mode = fields.get("mode", "create")
    if mode not in ("create", "append", "replace"):
        raise Problem(422, f"mode: {mode!r} is not create, append or replace", field="mode")
    if mode == "replace" and not who.is_admin:
        raise Problem(403, f"replacing a dataset needs the admin role; {who.name!r} is not one")
    return cast("Mode", mode)


def _load(
    yard: Yard, name: str, mode: Mode, rows: Any, options: dict[str, Any]
) -> tuple[Dataset, int]:
    """The dataset once ``rows`` are in it, and how many were added."""
    before = _existing(yard, name)
    if mode == "create" and before is not None:
        raise Problem(
            409,
            f"dataset {name!r} exists already: mode=append adds rows to it, "
            "mode=replace replaces them",
            field="name",
        )
    loaded = yard.datasets.add(
        name, rows, append=mode == "append", replace=mode == "replace", **options
    )
    kept = before.rows if before is not None and mode == "append" else 0
    return loaded, loaded.rows - kept


def _existing(yard: Yard, name: str) -> Dataset | None:
    try:
        return yard.datasets.get(name)
    except DatasetNotFound:
        return None


@router.delete("/datasets/{name}", responses=_READ | responses(403))
def delete_dataset(
    request: Request, name: DatasetName, _: Caller = Depends(admin)
) -> dict[str, Any]:
    """Delete a dataset (admins only: datasets have no owner). Batches made from it keep
    their items. Answers the number of rows it had."""
    return {"name": name, "rows": yard_of(request).datasets.delete(name)}
