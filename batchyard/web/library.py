"""The template routes (``batchyard template``): list, show, one version, create, update,
diff and archive. Any caller reads them; an operator writes them, as its token's name.

(Not ``web/templates.py``: ``web/templates/`` is the dashboard's page templates.)"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from batchyard.models import UNSET, TemplateRef
from batchyard.views import template_view
from batchyard.web import tasks
from batchyard.web.auth import Caller, caller, operator, yard_of
from batchyard.web.paths import TemplateName
from batchyard.web.problems import responses
from batchyard.web.schemas import TemplateIn, TemplateUpdate

router = APIRouter(tags=["templates"])
_READ = responses(401, 404, 422, 503)
_WRITE = responses(401, 403, 404, 409, 422, 503)
_BODY = _WRITE | responses(400)  # a body that is not JSON
_VERSION = Path(ge=1, le=2**31, description="a version number")


@router.get("/templates", responses=_READ)
def list_templates(
    request: Request,
    _: Caller = Depends(caller),
    archived: bool = Query(False, description="include versions archived"),
) -> list[dict[str, Any]]:
    """The latest version of each template, by name (``template list --json``)."""
    return [t.as_dict() for t in yard_of(request).templates.list(archived=archived)]


@router.get("/templates/{name}", responses=_READ)
def get_template(
    request: Request, name: TemplateName, _: Caller = Depends(caller)
) -> dict[str, Any]:
    """The latest version (not archived), and every version with what its batches did:
    items, success rate, tokens and cost per item (``template show --json``)."""
    templates = yard_of(request).templates
    versions = templates.versions(name)
    return template_view(templates.get(name), versions, templates.usage(name))


@router.get("/templates/{name}/versions/{version}", responses=_READ)
def get_version(
    request: Request,
    name: TemplateName,
    version: int = _VERSION,
    _: Caller = Depends(caller),
) -> dict[str, Any]:
    """One version, archived or not, with the ``usage`` of its batches (null if none)."""
    templates = yard_of(request).templates
    found = templates.get(TemplateRef(name, version))
    used = next((u for u in templates.usage(name) if u.version == version), None)
    return {**found.as_dict(), "usage": None if used is None else used.as_dict()}


@router.post("/templates", status_code=201, responses=_BODY)
def create_template(
    body: TemplateIn, request: Request, response: Response, who: Caller = Depends(operator)
) -> dict[str, Any]:
    """Version 1 of a new template. Its task must be one this server allows (a 422 lists
    them); the task checks the parameters (a 422 names the one it refuses); a name in use
    is a 409."""
    tasks.check(body.task, request.app.state.settings)
    made = yard_of(request).templates.create(
        body.name, body.task, body.params, description=body.description, author=who.name
    )
    response.headers["Location"] = f"{request.url.path}/{made.name}/versions/{made.version}"
    return made.as_dict()


@router.post("/templates/{name}/versions", status_code=201, responses=_BODY)
def update_template(
    body: TemplateUpdate,
    request: Request,
    response: Response,
    name: TemplateName,
    who: Caller = Depends(operator),
) -> dict[str, Any]:
    """The next version: the newest version's parameters with ``params`` set and
    ``unset`` removed. A version that changes nothing is a 422."""
    templates = yard_of(request).templates
    # The task is the template's, not the client's, but it is imported to check the
    # parameters: a template made outside the server may name one the server does not allow.
    tasks.check(templates.versions(name)[-1].task, request.app.state.settings, field="name")
    given = "description" in body.model_fields_set
    made = templates.update(
        name,
        body.params,
        unset=body.unset,
        description=body.description if given else UNSET,
        author=who.name,
    )
    response.headers["Location"] = f"{request.url.path}/{made.version}"
    return made.as_dict()


@router.get("/templates/{name}/diff", responses=_READ)
def diff_template(
    request: Request,
    name: TemplateName,
    old: int = Query(alias="from", ge=1, le=2**31, description="the older version"),
    new: int = Query(alias="to", ge=1, le=2**31, description="the newer version"),
    _: Caller = Depends(caller),
) -> dict[str, Any]:
    """What changed from version ``from`` to ``to``: a unified diff of each text
    parameter, and the other parameters that changed (``template diff --json``)."""
    return yard_of(request).templates.diff(name, old, new).as_dict()


@router.post("/templates/{name}/versions/{version}/archive", responses=_WRITE)
def archive_version(
    request: Request,
    name: TemplateName,
    version: int = _VERSION,
    _: Caller = Depends(operator),
) -> dict[str, Any]:
    """Hide a version from ``NAME`` and listings (submitting it is then a 409); batches
    that ran with it still show it, and nothing is deleted."""
    return yard_of(request).templates.archive(TemplateRef(name, version)).as_dict()
