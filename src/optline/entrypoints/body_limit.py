"""Request bodies larger than the limit are refused with 413 before they are read (DESIGN.md invariant 7:
a clear error; and a 200 MB POST must cost nothing).

Two doors: a ``Content-Length`` above the limit is answered here at once, the app never called; a body sent
without one (chunked), or longer than it said, is counted as it arrives by Starlette's own
``RequestBodyLimitResponder`` and refused at the first chunk past the limit. FastAPI knows that one's
signal and answers 413 wherever the body was being read (an error of ours raised there would come out as
its 400 "error parsing the body"). What this module adds is the choice of limit by path.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitResponder
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The one route that takes files: the dashboard's contact import (its own, larger limit).
UPLOAD_PATHS = re.compile(r"/dashboard/programs/[^/]+/import")


def limits(max_body_bytes: int, max_upload_bytes: int) -> Callable[[str], int]:
    """The limit for a request path: uploads get theirs, everything else (webhooks, API, forms) the other."""
    return lambda path: max_upload_bytes if UPLOAD_PATHS.fullmatch(path) else max_body_bytes


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        refusal = declared_refusal(scope, limit)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await RequestBodyLimitResponder(self.app, limit)(scope, receive, tracking_send)
        except BaseExceptionGroup as group:
            # A function middleware (``app.middleware("http")``) runs the app in a task group, which wraps
            # Starlette's signal in an ExceptionGroup that its responder does not recognise.
            if started or group.split(_is_too_large)[1] is not None:
                raise
            await too_large(limit)(scope, receive, send)


def declared_refusal(scope: Scope, limit: int) -> PlainTextResponse | None:
    """The answer to a request whose ``Content-Length`` is over ``limit`` (413) or not a number (400),
    given before anything of its body is read; None for any other request."""
    declared = _content_length(scope)
    if declared == -1:
        return PlainTextResponse("bad request: Content-Length is not a number", 400)
    if declared is not None and declared > limit:
        return too_large(limit)
    return None


class BodyTooLarge(Exception):
    """Raised by ``counting_receive`` at the first chunk past the limit."""


def counting_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises BodyTooLarge once the body's chunks add up to more than ``limit`` bytes (a
    body sent without a length, or longer than it said). For an app that answers it with ``too_large``
    itself (the webhooks' lane); the middleware above leaves it to Starlette's responder, whose signal
    FastAPI recognises wherever the body was being read."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit


def _is_too_large(exc: BaseException) -> bool:
    return isinstance(exc, HTTPException) and exc.status_code == 413


def too_large(limit: int) -> PlainTextResponse:
    # Connection: close, so the server does not read the rest of the body to reuse the connection.
    return PlainTextResponse(
        f"request body too large: the limit is {limit} bytes", 413, headers={"connection": "close"}
    )


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None
