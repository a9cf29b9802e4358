"""Logging: one JSON object per line (or plain text in development), each carrying the id of the HTTP
request it was written for.

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` (null outside a
request) and any ``extra={...}`` fields of the call. What never goes to a log at INFO: secrets (tokens,
signatures, passwords) and message bodies — a log call passes ids and counts, not the request or the SMS.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
import traceback
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.json import JsonEncoder, JsonFormatter
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
# Accepted from a client or proxy as it is; anything else (too long, spaces, control characters that could
# forge a log line) is replaced by an id of our own.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Libraries whose INFO lines carry what must not be logged (httpx: every request URL, which holds account
# ids and, for some providers, credentials in the query).
_QUIET = ("httpx", "httpcore")

request_id: ContextVar[str | None] = ContextVar("optline_request_id", default=None)
access_log = logging.getLogger("optline.access")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class _JsonFormatter(JsonFormatter):
    """python-json-logger's formatter with two per-line costs taken out (a webhook burst writes an access
    line per request): the encoder is built once, not by ``json.dumps`` for every line, and the time is
    written as text here rather than handed to the encoder as a datetime for its ``default`` hook to
    recognise. The same fields, in the same order, as the library's ``timestamp="time"``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = JsonEncoder(ensure_ascii=False)  # its default(): any other type as the library does

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()  # UTC, ISO 8601

    def jsonify_log_record(self, log_data: LogData) -> str:
        return self._encoder.encode(log_data)


def json_formatter() -> logging.Formatter:
    formatter = _JsonFormatter(
        "{message}{name}{levelname}{request_id}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI-coloured copy of the message
    )
    formatter.converter = time.gmtime
    return formatter


def configure(fmt: Literal["json", "text"], level: int = logging.INFO) -> None:
    """Send every logger (ours, uvicorn's) to stderr in ``fmt``; called once by ``serve`` and ``worker``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's loggers write through the root handler (one format for the whole process).
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Neither format writes the thread's or the process's name or id: not looked up for every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


# A request id of our own: this process's random prefix and a counter (32 hex digits, like a uuid4's): unique
# across processes without a system call per request (os.urandom releases the GIL, and getting it back under
# a webhook burst took milliseconds).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def begin_request(scope: Scope) -> tuple[str, Token[str | None]]:
    """The request's id — its ``X-Request-ID`` (a proxy's) when usable, else one of ours — made the
    ``request_id`` of every log line written until the token is reset."""
    given = ""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_KEY:  # (the last one, as a dict of the headers would keep)
            given = value.decode("latin-1")
    rid = given if _VALID_REQUEST_ID.fullmatch(given) else new_request_id()
    return rid, request_id.set(rid)


def write_access_line(scope: Scope, status: int, started: float) -> None:
    """One access line: method, route template (never the raw path: opt-out links carry their token in it;
    never the query: Vonage sends the whole SMS there), status and duration.

    The record is made here rather than by ``Logger.info``, which walks the stack for the caller's file and
    line for every line (neither format writes them): a webhook burst writes one of these per request."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    method, route = scope["method"], route_of(scope)
    extra = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    record = access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "%s %s %s", (method, route, status), None,
        "write_access_line", extra,
    )  # fmt: skip
    access_log.handle(record)


class RequestIdMiddleware:
    """Gives every request its id (``begin_request``), answers it in the ``X-Request-ID`` response header,
    and writes one access line per request (``write_access_line``). (The webhooks' lane does the same in
    one layer with their other wrappers: entrypoints/api/webhook_lane.py.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, token = begin_request(scope)
        started = time.perf_counter()
        answer = Answer(rid, send)
        try:
            await self.app(scope, receive, answer)
        finally:
            # 500: what the client sees if the app failed before answering
            write_access_line(scope, answer.status or 500, started)
            request_id.reset(token)


class Answer:
    """A request's ``send``, with its id added to the response's headers and the status it was answered
    with (0 until the response starts) remembered for the access line."""

    __slots__ = ("rid", "send", "status")

    def __init__(self, rid: str, send: Send) -> None:
        self.rid, self.send, self.status = rid, send, 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            MutableHeaders(scope=message)[REQUEST_ID_HEADER] = self.rid
        await self.send(message)


_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()


def describe(exc: BaseException) -> str:
    """An exception for a log line at INFO or above: its type and where it was raised, not its message —
    a database error repeats the row it refused (PostgreSQL: "Failing row contains (…)"), SMS body
    included. The full traceback goes to DEBUG."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{type(exc).__module__}.{type(exc).__qualname__}{where}"


def route_of(scope: Scope) -> str:
    """The matched route's template (``/o/{token}``), or ``unmatched`` (a 404 logs no path it was sent)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
