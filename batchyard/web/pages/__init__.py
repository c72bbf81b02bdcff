"""The dashboard: server-rendered pages (one module per group) over the same core calls the
API routes make, their templates in ``web/templates`` and static files in ``web/static``.
``install`` adds them to an app (``create_app`` does when ``settings.ui`` is true)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from batchyard.web.pages import (
    actions,
    compare,
    datasets,
    detail,
    history,
    item,
    live,
    new,
    picking,
    rerun,
    signin,
    templates,
    tokens,
)

STATIC = Path(__file__).resolve().parent.parent / "static"


def install(app: FastAPI) -> None:
    """Mount the static files at ``/static`` and add every page's routes."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for group in (
        signin,
        history,
        new,
        picking,
        compare,
        live,
        detail,
        rerun,
        actions,
        item,
        templates,
        datasets,
        tokens,
    ):
        app.include_router(group.router)
