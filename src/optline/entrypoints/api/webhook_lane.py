"""The provider webhooks' lane: what protects and records a webhook request, in one layer.

A burst of STOPs is a few thousand requests a second through the event loop, and every wrapper around the
route is paid per request: a coroutine call and a closure on the way in, and another on each ``send``. The
lane used to be five of them (request id, body limit, Starlette's body limit responder, server error,
exception middleware) and a router trying each route in turn; this is those duties in one call, for the
routes it knows by their path:

- the request id (``X-Request-ID`` in, the log lines' ``request_id``, the response header) and one access
  line, as ``logs.RequestIdMiddleware`` writes them for every other request;
- the body limit: a declared length over it answered before anything is read, a body longer than it cut at
  the first chunk past it (entrypoints/body_limit.py, the same answers);
- anything unexpected answered with a 500 (and re-raised, so that the server logs it), as Starlette's
  ServerErrorMiddleware does: a webhook's own errors are answered by the route.

What the routes do not match (another path under /webhooks/, a method a route does not take, a trailing
slash) goes to Starlette's router with its exception middleware, which answers 404, 405 or a redirect as
it always did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from optline.entrypoints.body_limit import BodyTooLarge, counting_receive, declared_refusal, too_large
from optline.logs import Answer, begin_request, request_id, write_access_line


class WebhookLane:
    __slots__ = ("fallback", "limit_for", "routes")

    def __init__(self, routes: Sequence[Route], limit_for: Callable[[str], int]) -> None:
        self.routes = {route.path: route for route in routes}
        self.limit_for = limit_for
        self.fallback = ExceptionMiddleware(Router(routes=list(routes)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid, token = begin_request(scope)
        started = time.perf_counter()
        send_with_id = Answer(rid, send)
        limit = self.limit_for(scope["path"])
        try:
            refusal = declared_refusal(scope, limit)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self._route(scope, counting_receive(receive, limit), send_with_id)
        except BodyTooLarge:
            if send_with_id.status:
                raise
            await too_large(limit)(scope, receive, send_with_id)
        except Exception:
            if not send_with_id.status:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_id)
            raise
        finally:
            write_access_line(scope, send_with_id.status or 500, started)
            request_id.reset(token)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None if scope.get("root_path") else self.routes.get(scope["path"])
        if route is None or (route.methods and scope["method"] not in route.methods):  # (HEAD: as GET)
            await self.fallback(scope, receive, send)
            return
        # What Starlette's router puts in the scope for a match (the access line names scope["route"]).
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        await route.app(scope, receive, send)
