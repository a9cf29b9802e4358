"""Request bodies larger than the limit are refused with 413 before they are read (DESIGN.md invariant 7:
a clear error; and a 200 MB POST must cost nothing).

Two doors: a ``Content-Length`` above the limit is answered at once, the app never called; a body sent
without one (chunked) is counted as it arrives and refused at the first chunk past the limit. The count
also guards against a client whose Content-Length understates what it sends.

The refusal is a Starlette ``HTTPException``: FastAPI re-raises those from its body parsing (any other
error there becomes a 400 "error parsing the body"), and the app's exception handling renders it. Raised
past the app (a route that does not use FastAPI's body parsing), it is answered here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The one route that takes files: the dashboard's contact import (its own, larger limit).
UPLOAD_PATHS = re.compile(r"/dashboard/programs/[^/]+/import")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit} bytes")


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
        declared = _content_length(scope)
        if declared == -1:
            await PlainTextResponse("bad request: Content-Length is not a number", 400)(scope, receive, send)
            return
        if declared is not None and declared > limit:
            await _refuse(limit, scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # the app answered before reading it all: nothing more to say
                raise
            await _refuse(limit, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    # Connection: close, so the server does not read the rest of the body to reuse the connection.
    response = PlainTextResponse(
        f"request body too large: the limit is {limit} bytes", 413, headers={"connection": "close"}
    )
    await response(scope, receive, send)
