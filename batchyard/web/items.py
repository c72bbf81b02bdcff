"""A batch's items and what was made of them: the items (a page at a time), one item with
its attempts and logs, the results as a streamed file, the report, the error clusters."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from batchyard.exports import write_results
from batchyard.report import build_report
from batchyard.states import ItemState
from batchyard.views import item_view
from batchyard.web.auth import Caller, caller, visible, yard_of
from batchyard.web.paths import BatchId, ItemKey
from batchyard.web.problems import responses
from batchyard.web.schemas import CLUSTER

router = APIRouter(tags=["items"])
_READ = responses(401, 404, 422, 503)
#: The longest error text an item listing carries (the item itself has it whole).
ERROR_CUT = 200
_MEDIA = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


@router.get("/batches/{batch_id}/items", responses=_READ)
def list_items(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(caller),
    state: ItemState | None = None,
    cluster: str | None = Query(None, pattern=CLUSTER, description="an error cluster's id"),
    cursor: int = Query(0, ge=0, le=2**31, description="the previous page's next_cursor"),
    limit: int = Query(100, ge=1, le=1000),
    include: Literal["payload", "result", "all"] | None = None,
) -> dict[str, Any]:
    """Items in submission order, a page at a time; payloads and results only when
    ``include`` asks (a listing of big ones costs no more than one of small ones), and
    each error cut to 200 characters."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    rows = yard.store.items(
        batch_id,
        state=state,
        cluster=cluster,
        after=cursor,
        limit=limit,
        payloads=include in ("payload", "all"),
        results=include in ("result", "all"),
    )
    items = []
    for item in rows:
        entry = item.as_dict()
        if item.error is not None and len(item.error) > ERROR_CUT:
            entry["error"] = item.error[: ERROR_CUT - 1] + "…"
        if include is None or include == "result":
            entry.pop("payload", None)
        if include is None or include == "payload":
            entry.pop("result", None)
        items.append(entry)
    more = len(rows) == limit
    return {"items": items, "next_cursor": rows[-1].position if more else None}


# ``:path``: a key may hold "/" (paths.ItemKey).
@router.get("/batches/{batch_id}/items/{key:path}", responses=_READ)
def get_item(
    batch_id: BatchId, key: ItemKey, request: Request, who: Caller = Depends(caller)
) -> dict[str, Any]:
    """One item whole (``batchyard item --json``): payload, result, every attempt with its
    error and log lines."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    batch = yard.batch(batch_id)
    return item_view(batch.item(key), batch.logs(key))


@router.get(
    "/batches/{batch_id}/results",
    responses=_READ
    | {200: {"content": {media: {} for media in _MEDIA.values()}, "description": "the results"}},
    response_class=StreamingResponse,
)
def results(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(caller),
    format: Literal["jsonl", "csv", "parquet"] = "jsonl",
    state: ItemState | None = None,
) -> StreamingResponse:
    """Every item (or those in ``state``) with its result, streamed as JSONL, CSV or
    Parquet (``batchyard export``)."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    batch = yard.batch(batch_id)
    disposition = f'attachment; filename="{batch_id}.{format}"'
    return StreamingResponse(
        _chunks(lambda out: write_results(batch.items(state), format, out)),
        media_type=_MEDIA[format],
        headers={"Content-Disposition": disposition},
    )


@router.get("/batches/{batch_id}/report", responses=_READ)
def report(batch_id: BatchId, request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """The batch's report (``batchyard report --json``)."""
    yard = yard_of(request)
    visible(yard, who, batch_id)
    return build_report(yard.batch(batch_id)).as_dict()


@router.get("/batches/{batch_id}/errors", responses=_READ)
def errors(
    batch_id: BatchId,
    request: Request,
    who: Caller = Depends(caller),
    limit: int | None = Query(None, ge=1, le=1000),
) -> dict[str, Any]:
    """Why its items failed, as error clusters (``batchyard errors --json``)."""
    yard = yard_of(request)
    status = visible(yard, who, batch_id)
    clusters = yard.store.error_clusters(batch_id, limit)
    return {
        "batch": batch_id,
        "failed": status.counts.failed,
        "clusters": [c.as_dict() for c in clusters],
    }


class _Pipe(io.RawIOBase):
    """A file a writer thread fills and a reader drains, a bounded number of chunks at a
    time: a big export streams in flat memory. Closing the reader stops the writer."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self.abandoned = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.abandoned.is_set():
            raise BrokenPipeError("the client went away")
        chunk = bytes(data)
        while True:
            try:
                self.chunks.put(chunk, timeout=0.5)
                return len(chunk)
            except queue.Full:
                if self.abandoned.is_set():
                    raise BrokenPipeError("the client went away") from None


def _chunks(write: Callable[[IO[bytes]], object]) -> Iterator[bytes]:
    pipe = _Pipe()

    def produce() -> None:
        try:
            write(io.BufferedWriter(pipe, buffer_size=1 << 16))
            pipe.chunks.put(None)
        except BrokenPipeError:
            pass
        except BaseException as exc:
            pipe.chunks.put(exc)

    threading.Thread(target=produce, name="batchyard-export", daemon=True).start()
    try:
        while (chunk := pipe.chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        pipe.abandoned.set()
