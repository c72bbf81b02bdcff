"""``PageRoute``: a route whose failures are pages, not problem bodies. A missing session
goes to the sign-in page (an htmx request is told with ``HX-Redirect``); a core error, a
``Problem`` or a bad query parameter is an error page with the status the API would give."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from batchyard.errors import BatchyardError
from batchyard.web.pages import render
from batchyard.web.pages.guard import SignInNeeded
from batchyard.web.problems import Problem, field_error, of_error

SIGN_IN = "/signin"


def sign_in_answer(request: Request, next_url: str) -> Response:
    target = f"{SIGN_IN}?next={quote(next_url, safe='')}"
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def error_page(request: Request, problem: Problem) -> Response:
    answer = render.page(
        request,
        "error.html",
        None,
        status_code=problem.status,
        title=problem.title,
        detail=problem.detail,
    )
    answer.headers.update(problem.headers)
    return answer


def _invalid(exc: RequestValidationError) -> Problem:
    return Problem(422, field_error(exc.errors()[0] if exc.errors() else {}))


class PageRoute(APIRoute):
    """An APIRoute that answers its failures as pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded as exc:
                return sign_in_answer(request, exc.next)
            except Problem as exc:
                return error_page(request, exc)
            except BatchyardError as exc:
                return error_page(request, of_error(exc))
            except RequestValidationError as exc:
                return error_page(request, _invalid(exc))

        return page_handler
