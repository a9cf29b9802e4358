"""/webhooks/<provider>/sms and /webhooks/<provider>/status: authenticated, idempotent, commit-then-answer.

- A missing or wrong signature: 403, nothing recorded (invariant 6). The signature is checked before the
  body is parsed, over exactly the bytes that are then parsed.
- A body in a format the provider does not send: 415 naming the expected one, nothing read.
- A request we cannot read: 400 naming the field (the provider will not fix it by retrying).
- The change could not be committed: 500, so the provider retries (invariant 3). 2xx only after commit.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from optline.adapters import metrics
from optline.adapters.providers.base import InboundSms, StatusUpdate
from optline.adapters.providers.plivo import webhook as plivo
from optline.adapters.providers.simulator import webhook as simulator
from optline.adapters.providers.telnyx import webhook as telnyx
from optline.adapters.providers.twilio import webhook as twilio
from optline.adapters.providers.vonage import webhook as vonage
from optline.adapters.providers.webhook_request import (
    PayloadError,
    SignatureError,
    UnsupportedMediaType,
    WebhookRequest,
    public_url,
)
from optline.bootstrap import Container
from optline.logs import describe
from optline.services import inbound as inbound_service

log = logging.getLogger("optline.webhooks")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
SIGNUP_HOOK = "signup.double_opt_in"  # Container.extras key: services/signup.py's keyword opt-in handler


def verify(provider: str, container: Container, req: WebhookRequest) -> None:
    """Raise SignatureError unless ``req`` carries a valid signature of ``provider``'s scheme."""
    s = container.settings
    if provider == "twilio":
        twilio.verify(req, s.twilio_auth_token.get_secret_value())
    elif provider == "vonage":
        vonage.verify(
            req,
            s.vonage_signature_secret.get_secret_value(),
            s.vonage_signature_method,
            container.clock.now(),
        )
    elif provider == "plivo":
        plivo.verify(req, s.plivo_auth_token.get_secret_value())
    elif provider == "telnyx":
        telnyx.verify(req, s.telnyx_public_key, container.clock.now())
    elif provider == "simulator":
        simulator.verify(req, container.secret_key())
    else:
        raise KeyError(provider)


MODULES: dict[str, ModuleType] = {
    "twilio": twilio, "vonage": vonage, "plivo": plivo, "telnyx": telnyx, "simulator": simulator,
}  # fmt: skip


async def _read(scope: Scope, receive: Receive, container: Container) -> WebhookRequest:
    """The request as its provider signed it, read from the ASGI scope and messages the way Starlette's
    ``Request`` reads them (headers and query pairs as latin-1, the URL's query as UTF-8; a client gone before
    the body arrived is ClientDisconnect), without building one: a webhook needs nothing else of it."""
    chunks = []
    while True:
        message = await receive()  # (the body limit's receive: it raises past the limit)
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    query: bytes = scope.get("query_string", b"")
    return WebhookRequest(
        method=scope["method"],
        # The matched route's path: it holds none of the characters a URL would escape.
        url=public_url(container.settings.public_url, scope["path"], query.decode()),
        headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        body=b"".join(chunks),
        query=parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else [],
        received_at=container.clock.now(),
    )


def _ok(provider: str, payload: dict[str, Any]) -> Response:
    if provider == "twilio":
        return Response(EMPTY_TWIML, media_type="application/xml")
    return JSONResponse(payload)


Unit = Callable[[Connection], dict[str, Any]]


def prepare(container: Container, provider: str, kind: str, req: WebhookRequest) -> Unit:
    """Verify, then parse: nothing in the body is read before its signature is checked. Returns the unit of
    work that records it (database work only: it runs in the caller's transaction, and runs again, alone,
    when the group commit it was part of failed)."""
    if provider == "simulator" and not container.settings.uses_simulator:
        # The routes are not mounted then; this also covers every other caller (the CLI, the dashboard).
        raise SignatureError(
            f"simulator: refused, OPTLINE_PROVIDER is {container.settings.provider!r} (the simulator is for "
            "development only)"
        )
    verify(provider, container, req)
    if provider == "telnyx" and kind == "sms" and not telnyx.is_inbound(req):
        # One Telnyx URL may receive every messaging event: delivery reports posted here are status updates.
        kind = "status"
    module = MODULES[provider]
    if kind == "sms":
        sms = module.parse_inbound(req)
        opt_out_type = twilio.provider_opt_out(sms) if provider == "twilio" else None
        return _InboundUnit(container, inbound_service.Reply(sms, opt_out_type))
    update = module.parse_status(req)
    return lambda conn: _record_status(conn, container, update)


def handle(container: Container, provider: str, kind: str, req: WebhookRequest) -> dict[str, Any]:
    """Verify, parse and record in a transaction of its own (the CLI; the routes batch theirs)."""
    unit = prepare(container, provider, kind, req)
    with container.db.transaction() as conn:
        payload = unit(conn)
    committed(payload)
    return payload


def handle_inbound(container: Container, provider: str, req: WebhookRequest) -> dict[str, Any]:
    """Verify, parse and record one inbound message in its own transaction (also used by the CLI)."""
    return handle(container, provider, "sms", req)


def committed(payload: dict[str, Any]) -> None:
    """What follows a commit: a recorded reply's intent is counted once (never for a provider's retry)."""
    if payload.get("status") == "recorded" and payload.get("intent"):
        _intent(payload["intent"]).inc()


def _record_inbound(
    conn: Connection, container: Container, sms: InboundSms, opt_out_type: str | None
) -> dict[str, Any]:
    result = inbound_service.record_inbound(
        conn,
        container.clock,
        sms,
        default_region=container.settings.default_region,
        provider_opt_out=opt_out_type,
        double_opt_in=container.extras.get(SIGNUP_HOOK),
    )
    return _payload(result)


class _InboundUnit:
    """The recording of one inbound reply; a group commit hands a run of them to ``run_many`` together."""

    __slots__ = ("container", "reply")

    def __init__(self, container: Container, reply: inbound_service.Reply) -> None:
        self.container = container
        self.reply = reply

    def __call__(self, conn: Connection) -> dict[str, Any]:
        return _record_inbound(conn, self.container, self.reply.sms, self.reply.provider_opt_out)

    @staticmethod
    def run_many(conn: Connection, units: list[_InboundUnit]) -> list[dict[str, Any]]:
        container = units[0].container
        if any(u.container is not container for u in units):  # pragma: no cover - one app per group commit
            return [u(conn) for u in units]
        results = inbound_service.record_inbound_many(
            conn,
            container.clock,
            [u.reply for u in units],
            default_region=container.settings.default_region,
            double_opt_in=container.extras.get(SIGNUP_HOOK),
        )
        return [_payload(result) for result in results]


def _payload(result: inbound_service.InboundResult) -> dict[str, Any]:
    c = result.classification
    return {
        "status": "duplicate" if result.duplicate else "recorded",
        "inbound_id": result.inbound_id,
        "intent": c.intent.value if c else None,
        "review": c.review if c else None,
        "consent_event_id": result.consent_event_id,
        "replies": result.replies,
    }


def _record_status(conn: Connection, container: Container, update: StatusUpdate) -> dict[str, Any]:
    result = inbound_service.record_status(conn, container.clock, update)
    return {
        "message_id": result.message_id,
        "changed": result.changed,
        "consent_event_id": result.consent_event_id,
    }


async def _dispatch(scope: Scope, receive: Receive, send: Send, provider: str, kind: str) -> None:
    started = time.perf_counter()
    response, outcome = await _answer(scope, receive, provider, kind)
    # Counted per route (a Telnyx delivery report posted to /sms counts as an sms request).
    _counter(provider, kind, outcome).inc()
    _timer(provider, kind).observe(time.perf_counter() - started)
    await response(scope, receive, send)


# The metrics' children by label values, looked up once: ``labels()`` takes a lock and checks its arguments on
# every call, and a burst asks for the same few children thousands of times a second.
@functools.cache
def _counter(provider: str, kind: str, outcome: str) -> Any:
    return metrics.WEBHOOK_REQUESTS.labels(provider, kind, outcome)


@functools.cache
def _timer(provider: str, kind: str) -> Any:
    return metrics.WEBHOOK_SECONDS.labels(provider, kind)


@functools.cache
def _intent(intent: str) -> Any:
    return metrics.INBOUND_INTENTS.labels(intent)


async def _answer(scope: Scope, receive: Receive, provider: str, kind: str) -> tuple[Response, str]:
    """The response and its outcome for the metrics (recorded, duplicate, unchanged, forbidden,
    unsupported, bad_request, error). Log lines carry ids and reasons, never the body."""
    app = scope["app"]  # (set by App.__call__, as Starlette sets it)
    container: Container = app.state.container
    req = await _read(scope, receive, container)
    try:
        # Verified and parsed here, on the event loop (a few hundred microseconds of CPU, no I/O): a forged or
        # unreadable request never reaches the writer. The recording joins the group commit (see there).
        unit = prepare(container, provider, kind, req)
        payload = await app.state.group_commit.run(unit)
    except UnsupportedMediaType as exc:
        log.warning("refused %s %s webhook: %s", provider, kind, exc)
        return PlainTextResponse(f"unsupported media type: {exc}", status_code=415), "unsupported"
    except SignatureError as exc:
        log.warning("refused %s %s webhook: %s", provider, kind, exc)
        return PlainTextResponse("forbidden: invalid signature", status_code=403), "forbidden"
    except PayloadError as exc:
        return PlainTextResponse(f"bad request: {exc}", status_code=400), "bad_request"
    except Exception as exc:  # not committed: ask the provider to retry (invariant 3)
        log.error(
            "%s %s webhook failed (%s); answering 500 so the provider retries", provider, kind, describe(exc)
        )
        log.debug("%s %s webhook failure", provider, kind, exc_info=True)  # may hold the body
        return PlainTextResponse("error: not recorded, please retry", status_code=500), "error"
    committed(payload)
    if "status" in payload:
        outcome = str(payload["status"])  # an inbound reply: recorded or duplicate
    else:
        outcome = "recorded" if payload.get("changed") else "unchanged"
    return _ok(provider, payload), outcome


class _WebhookRoute(Route):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:  # as FastAPI's routes do: the access log names the route (logs.route_of)
            child["route"] = self
        return match, child


class _Endpoint:
    """A webhook route's ASGI application. Not an endpoint function: Starlette wraps those in a ``Request``
    and a layer of exception handling per request, which a webhook does not use (it reads the raw body and
    answers its own errors; the lane (webhook_lane.py) answers anything unexpected with a 500)."""

    __slots__ = ("kind", "provider")

    def __init__(self, provider: str, kind: str) -> None:
        self.provider = provider
        self.kind = kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _dispatch(scope, receive, send, self.provider, self.kind)


def _route(provider: str, kind: str) -> Route:
    # Vonage may be configured to call with GET (the message in the query string); the others POST.
    methods = ["GET", "POST"] if provider == "vonage" else ["POST"]
    return _WebhookRoute(
        f"/webhooks/{provider}/{kind}", _Endpoint(provider, kind), methods=methods, name=f"{provider}_{kind}"
    )


# Plain Starlette routes, not FastAPI's: a webhook takes the raw request, so FastAPI's per-request dependency
# solving and response handling had nothing to do but cost (in a burst, every request pays it in the event
# loop). None of them was ever in the OpenAPI schema: providers call them, not API clients.
routes = [
    _route(provider, kind)
    for provider in ("twilio", "vonage", "plivo", "telnyx")
    for kind in ("sms", "status")
]
# Mounted only when OPTLINE_PROVIDER=simulator (entrypoints/api/app.py): see Settings.uses_simulator.
simulator_routes = [_route("simulator", kind) for kind in ("sms", "status")]
