"""Local HTTP servers that speak each SMS provider's REST API, record what they received, and fail on demand.

They answer what each provider documents (the page is cited next to each behaviour), never what optline's
code expects. One server answers all four providers on their real paths:
- Twilio  ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (create) and ``GET`` of the same path (list,
  filtered by To/From/DateSent, paged with PageSize and ``next_page_uri``);
- Vonage  ``POST /sms/json`` (send) and ``GET /search/messages`` (search by date and recipient);
- Plivo   ``POST /v1/Account/{auth_id}/Message/`` (send) and ``GET`` (list: ``limit``/``offset``, ``meta.next``);
- Telnyx  ``POST /v2/messages`` (send; ``Idempotency-Key`` replays only the same request).

Behaviour common to all of them, each configurable (``FakeProviders(...)``, ``--latency`` or ``/_fake/config``):
- latency: every provider request waits a random time in ``latency`` (default 100–300 ms, as a provider
  across the internet does; fixtures that do not test timing set 0 so the suite stays fast);
- states: an accepted message is ``queued`` (``accepted`` for a Twilio Messaging Service), becomes ``sent``
  ``settle`` seconds later (its DateSent set then) and ``delivered`` after another ``settle``;
- ``list_lag``: a message shows up in the list/search endpoints only this long after it was accepted
  (read-your-writes is not promised by any of these list APIs; a reconciliation that looks too early misses
  it and would send a duplicate);
- faults: ``fail(...)`` rules (one-shot or ``times``), and ``chaos(...)``: random 500s, 429s with
  Retry-After, and lost answers (accepted, then the connection dies) at given rates.

Control (JSON over HTTP, so a test can drive a server in another process): ``GET /_fake/received``,
``POST /_fake/fail`` (inject failures), ``POST /_fake/chaos``, ``POST /_fake/optout`` (numbers the
"carrier" reports as opted out), ``POST /_fake/credit`` (``{"provider": "vonage", "empty": true}``: the
account is out of credit), ``POST /_fake/latency`` (``{"seconds": x}`` or ``{"min": a, "max": b}``),
``POST /_fake/config`` (``settle``, ``list_lag``), ``POST /_fake/reset``, ``GET /_fake/receipts``.

What each provider does with a recipient who opted out (its documentation, not our code's wishes):
- Twilio refuses the send: HTTP 400, code 21610 (https://www.twilio.com/docs/api/errors/21610);
- Telnyx refuses it with error 40300 "Blocked due to STOP message" when its block rule already holds
  (https://developers.telnyx.com/docs/messaging/messages/advanced-opt-in-out/index; that page does not give
  the HTTP status: the fake answers 409); 40300 is also a delivery error "reported via webhooks" in
  ``message.finalized`` (https://developers.telnyx.com/docs/messaging/messages/error-codes/index): numbers in
  ``blocked_later`` are accepted and then finalized with it;
- Vonage accepts it (status 0) and posts a delivery receipt with status failed/rejected and err-code 9
  (https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers). Status 9 in the *send*
  answer means "Partner Quota Violation: you do not have sufficient credit" (https://developer.vonage.com/en/api-errors/sms):
  the fake never answers an opted-out recipient with it;
- Plivo accepts it (202) and posts a status callback with Status failed and ErrorCode 200
  (https://www.plivo.com/docs/messaging/troubleshooting/error-codes).
The receipts the fake "would post" are kept in ``receipts`` (signing.sign's fixture shape): a test posts
them to optline's webhook, in any order relative to the send call's answer.

In a thread: ``with FakeProviders(latency=0) as fake: fake.url …``. As a process:
``python -m tests.support.fake_providers --port 0 [--latency 0.1-0.3]`` prints ``listening <port>`` first.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

TWILIO_SID, TWILIO_TOKEN = "AC" + "0" * 32, "twilio-test-token"
VONAGE_KEY, VONAGE_SECRET = "vonagekey", "vonage-test-secret"
PLIVO_ID, PLIVO_TOKEN = "MA" + "0" * 18, "plivo-test-token"
TELNYX_KEY = "KEYtelnyxtest"
DEFAULT_LATENCY = (0.1, 0.3)  # seconds, the "100–300 ms"
Latency = float | tuple[float, float]
# The send answers for an opted-out recipient of the providers that refuse at send time (module docstring).
OPTED_OUT = {
    "twilio": (
        400,
        {
            "code": 21610,
            "message": "Attempt to send to unsubscribed recipient",
            "status": 400,
            "more_info": "https://www.twilio.com/docs/errors/21610",
        },
    ),
    "telnyx": (
        409,
        {
            "errors": [
                {
                    "code": "40300",
                    "title": "Blocked due to STOP message",
                    "detail": "Messages cannot be sent from your number to this destination "
                    "because the destination has sent your number a stop message.",
                }
            ]
        },
    ),
}
VONAGE_OUT_OF_CREDIT = {
    "message-count": "1",
    "messages": [{"status": "9", "error-text": "Partner Quota Violation"}],
}
# What each provider answers when it rate-limits a send, with the page that documents it. The HTTP status
# is what matters to optline; Retry-After is added when the rule gives one.
RATE_LIMITED: dict[str, tuple[int, Any]] = {
    # https://www.twilio.com/docs/api/errors/20429: HTTP 429, code 20429 "Too Many Requests".
    "twilio": (429, {"code": 20429, "message": "Too Many Requests", "status": 429,
                     "more_info": "https://www.twilio.com/docs/errors/20429"}),
    # https://www.plivo.com/docs/messaging/api/response: 429 "Rate limit exceeded - too many requests".
    "plivo": (429, {"api_id": "fake", "error": "too many requests"}),
    # https://developers.telnyx.com/development/api-fundamentals/api-errors: 10011 "Too many requests".
    "telnyx": (429, {"errors": [{"code": "10011", "title": "Too many requests",
                                 "detail": "You have exceeded the maximum number of allowed requests."}]}),
    # The SMS API throttles in its body, HTTP 200, status 1 "Throttled" (https://developer.vonage.com/en/api-errors/sms).
    "vonage": (200, {"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]}),
}  # fmt: skip


def vonage_opt_out_receipt(message_id: str, to: str, sender: str) -> dict[str, Any]:
    """The delivery receipt Vonage posts for a message to a number that opted out (doc example's fields)."""
    params = {"msisdn": to, "to": sender, "network-code": "310090", "messageId": message_id, "price": "0.00000000",
              "status": "failed", "scts": datetime.now(UTC).strftime("%y%m%d%H%M"), "err-code": "9",
              "api-key": VONAGE_KEY, "message-timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    return {"provider": "vonage", "path": "/webhooks/vonage/status", "method": "POST", "mode": "md5hash",
            "params": params}  # fmt: skip


def plivo_opt_out_receipt(message_uuid: str, to: str, sender: str) -> dict[str, Any]:
    """The status callback Plivo posts for a message to a number that opted out (error code 200)."""
    params = {"MessageUUID": message_uuid, "Status": "failed", "From": sender, "To": to, "ErrorCode": "200",
              "TotalRate": "0", "TotalAmount": "0", "Units": "1", "MessageTime": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    return {"provider": "plivo", "path": "/webhooks/plivo/status", "params": params}


def telnyx_opt_out_receipt(message_id: str, to: str, sender: str) -> dict[str, Any]:
    """The ``message.finalized`` callback Telnyx posts when a message it accepted is then blocked by a STOP:
    error 40300 among the delivery errors "reported via webhooks"
    (https://developers.telnyx.com/docs/messaging/messages/error-codes/index; payload shape:
    https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks)."""
    now = datetime.now(UTC).isoformat()
    payload = {
        "data": {
            "event_type": "message.finalized",
            "id": str(uuid.uuid4()),
            "occurred_at": now,
            "record_type": "event",
            "payload": {
                "id": message_id,
                "direction": "outbound",
                "completed_at": now,
                "from": {"phone_number": sender},
                "to": [{"phone_number": to, "status": "delivery_failed"}],
                "errors": [
                    {
                        "code": "40300",
                        "title": "Blocked due to STOP message",
                        "detail": "Messages cannot be sent to this number because it replied STOP",
                    }
                ],
            },
        }
    }
    return {"provider": "telnyx", "path": "/webhooks/telnyx/status", "payload": payload}


def _latency_range(value: Latency) -> tuple[float, float]:
    low, high = (value, value) if isinstance(value, int | float) else value
    return float(low), float(high)


def parse_latency(text: str) -> tuple[float, float]:
    """``0.2`` or ``0.1-0.3`` (seconds), for the command line."""
    low, _, high = text.partition("-")
    return float(low), float(high or low)


class State:
    def __init__(
        self, latency: Latency = DEFAULT_LATENCY, settle: float = 1.0, list_lag: float = 0.0
    ) -> None:
        self.lock = threading.Lock()
        self.defaults = (_latency_range(latency), settle, list_lag)
        self.reset()

    def reset(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.chaos: dict[str, dict[str, Any]] = {}  # provider ("*": any) -> rates
        self.random = random.Random(0)
        self.opted_out: set[str] = set()
        # Telnyx: numbers whose STOP reaches the block rule only after the send was accepted — the message
        # is accepted (200) and then finalized with 40300 (telnyx_opt_out_receipt).
        self.blocked_later: set[str] = set()
        self.out_of_credit: set[str] = set()  # providers whose account has no credit left
        self.receipts: list[dict[str, Any]] = []  # status callbacks the provider would post (fixture shape)
        self.latency: Latency = self.defaults[0]
        self.settle, self.list_lag = self.defaults[1], self.defaults[2]
        # Telnyx: Idempotency-Key -> (the exact request body, the successful answer replayed).
        self.idempotency: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self.faults: dict[str, int] = {}  # chaos faults injected, by kind

    def wait(self) -> None:
        low, high = _latency_range(self.latency)  # a test may set a plain number
        if high > 0:
            time.sleep(self.random.uniform(low, high) if high > low else low)

    def take_failure(self, provider: str, to: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.failures:
                if (
                    rule.get("provider", provider) == provider
                    and rule.get("to", to) == to
                    and rule["times"] > 0
                ):
                    rule["times"] -= 1
                    return dict(rule)
            rates = self.chaos.get(provider) or self.chaos.get("*")
            if rates:
                roll = self.random.random()
                for name, rule in (
                    ("error_rate", {"status": 500}),
                    ("lost_answer_rate", {"accept": True, "drop": True}),
                    ("rate_limit_rate", {"rate_limited": True, "retry_after": rates.get("retry_after", 1)}),
                ):
                    if roll < rates.get(name, 0.0):
                        self.faults[name] = self.faults.get(name, 0) + 1
                        return rule
                    roll -= rates.get(name, 0.0)
        return None

    def record(
        self, provider: str, to: str, from_: str, body: str, key: str | None = None, initial: str = "queued"
    ) -> dict[str, Any]:
        # Id shapes: Twilio "SM" + 32 hex; Vonage 16 hex ("0C000000217B7F02"); Plivo and Telnyx UUIDs.
        hex_ = uuid.uuid4().hex
        sid = {"twilio": "SM" + hex_, "vonage": hex_[:16].upper()}.get(provider) or str(uuid.UUID(hex_))
        msg = {"provider": provider, "to": to, "from": from_, "body": body, "idempotency_key": key, "sid": sid,
               "at": datetime.now(UTC).isoformat(), "created": datetime.now(UTC), "initial": initial}  # fmt: skip
        with self.lock:
            self.received.append(msg)
        return msg

    # -- what a message looks like now ----------------------------------------------------------------
    def status(self, m: dict[str, Any], now: datetime) -> tuple[str, datetime | None]:
        """(status, date_sent): queued/accepted, then sent ``settle`` s later, delivered after another."""
        age = (now - m["created"]).total_seconds()
        if age < self.settle:
            return str(m["initial"]), None
        sent = m["created"] + timedelta(seconds=self.settle)
        return ("sent" if age < 2 * self.settle else "delivered"), sent

    def listed(self, provider: str, now: datetime) -> list[dict[str, Any]]:
        """The provider's messages its list endpoints show now (``list_lag`` after acceptance)."""
        lag = timedelta(seconds=self.list_lag)
        with self.lock:
            return [m for m in self.received if m["provider"] == provider and now - m["created"] >= lag]


def _rfc2822(at: datetime | None) -> str | None:
    return format_datetime(at, usegmt=True) if at else None


def _twilio_date(value: str) -> datetime:
    """A DateSent filter value: ``YYYY-MM-DD`` (the documented form) or an ISO 8601 date-time (what the
    helper libraries send)."""
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing -----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _basic(self) -> tuple[str, str]:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return "", ""
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password

    def _injected(self, provider: str, to: str, record: Any) -> bool:
        """Apply an injected failure; True when it answered (or hung up)."""
        rule = self.state.take_failure(provider, to)
        if rule is None:
            return False
        if rule.get("accept"):
            record()  # the provider accepted the message, but the answer never arrives in time
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if rule.get("drop"):
            self.close_connection = True
            return True
        headers = {"retry-after": str(rule["retry_after"])} if rule.get("retry_after") is not None else {}
        if rule.get("rate_limited"):
            self._send(*RATE_LIMITED[provider], headers)
            return True
        self._send(int(rule.get("status", 500)), rule.get("body", {"message": "injected failure"}), headers)
        return True

    # -- routes -------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        q = {k: v[0] for k, v in query.items()}
        s = self.state
        if url.path == "/_fake/received":
            with s.lock:
                self._send(200, [{k: v for k, v in m.items() if k != "created"} for m in s.received])
            return
        if url.path == "/_fake/receipts":
            with s.lock:
                self._send(200, list(s.receipts))
            return
        if url.path == "/_fake/faults":
            with s.lock:
                self._send(200, dict(s.faults))
            return
        s.wait()
        if url.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
            self._twilio_list(q)
        elif url.path == "/search/messages":
            self._vonage_search(q)
        elif url.path == f"/v1/Account/{PLIVO_ID}/Message/":
            self._plivo_list(q)
        else:
            self._send(404, {"message": f"no route GET {url.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._body()
        s = self.state
        if url.path.startswith("/_fake/"):
            self._control(url.path, json.loads(raw or b"{}"))
            return
        s.wait()
        if url.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
            self._twilio(raw)
        elif url.path == "/sms/json":
            self._vonage(raw)
        elif url.path == f"/v1/Account/{PLIVO_ID}/Message/":
            self._plivo(raw)
        elif url.path == "/v2/messages":
            self._telnyx(raw)
        else:
            self._send(404, {"message": f"no route POST {url.path}"})

    def _control(self, path: str, data: dict[str, Any]) -> None:
        s = self.state
        with s.lock:
            if path == "/_fake/fail":
                s.failures.append({"times": 1, **data})
            elif path == "/_fake/chaos":
                if "seed" in data:  # the same faults in the same order, run after run
                    s.random.seed(data.pop("seed"))
                s.chaos[data.pop("provider", "*")] = data
            elif path == "/_fake/optout":
                s.opted_out.update(data["numbers"])
            elif path == "/_fake/credit":
                (s.out_of_credit.add if data.get("empty") else s.out_of_credit.discard)(data["provider"])
            elif path == "/_fake/latency":
                s.latency = _latency_range(
                    data["seconds"] if "seconds" in data else (data["min"], data["max"])
                )
            elif path == "/_fake/config":
                s.settle = float(data.get("settle", s.settle))
                s.list_lag = float(data.get("list_lag", s.list_lag))
            elif path == "/_fake/reset":
                s.reset()
        self._send(200, {"ok": True})

    # -- Twilio -------------------------------------------------------------------------------------
    def _twilio(self, raw: bytes) -> None:
        if self._basic() != (TWILIO_SID, TWILIO_TOKEN):
            self._send(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        to, body = form.get("To", ""), form.get("Body", "")
        service = form.get("MessagingServiceSid")
        sender = form.get("From") or service or ""
        if not to or not body or not sender:
            self._send(
                400,
                {"code": 21604, "message": "A 'To', 'Body' and 'From' or 'MessagingServiceSid' are required"},
            )
            return
        # A message created through a Messaging Service starts "accepted", otherwise "queued"
        # (https://www.twilio.com/docs/messaging/api/message-resource#message-status-values).
        initial = "accepted" if service and not form.get("From") else "queued"
        if self._injected(
            "twilio", to, lambda: self.state.record("twilio", to, sender, body, initial=initial)
        ):
            return
        if to in self.state.opted_out:
            self._send(*OPTED_OUT["twilio"])
            return
        m = self.state.record("twilio", to, sender, body, initial=initial)
        # The create answer: HTTP 201, the Message resource with status queued/accepted and date_sent null
        # (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).
        self._send(201, self._twilio_resource(m, datetime.now(UTC)))

    def _twilio_resource(self, m: dict[str, Any], now: datetime) -> dict[str, Any]:
        status, sent = self.state.status(m, now)
        return {"sid": m["sid"], "account_sid": TWILIO_SID, "to": m["to"], "from": m["from"], "body": m["body"],
                "status": status, "direction": "outbound-api", "num_segments": "1", "error_code": None,
                "error_message": None, "date_created": _rfc2822(m["created"]), "date_sent": _rfc2822(sent),
                "date_updated": _rfc2822(sent or m["created"]), "price": None, "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{TWILIO_SID}/Messages/{m['sid']}.json"}  # fmt: skip

    def _twilio_list(self, q: dict[str, str]) -> None:
        """Read multiple Message resources (https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources):
        filters To, From, DateSent (``YYYY-MM-DD``; ``DateSent<``/``DateSent>`` for on-or-before/on-or-after)
        — a DateSent filter matches only messages that have a date_sent, so a queued or accepted message
        (date_sent null until Twilio sends it) is not listed under one. Sorted by DateSent, most recent first;
        PageSize default 50, max 1000; ``next_page_uri`` carries the filters, ``Page`` and ``PageToken``."""
        if self._basic() != (TWILIO_SID, TWILIO_TOKEN):
            self._send(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        now = datetime.now(UTC)
        try:
            size = int(q.get("PageSize", "50"))
            page = int(q.get("Page", "0"))
            offset = int(q.get("PageToken", "PA0")[2:])
            bounds = {k: _twilio_date(q[k]) for k in ("DateSent", "DateSent<", "DateSent>") if k in q}
        except ValueError as exc:
            self._send(400, {"code": 20001, "message": f"Invalid parameter: {exc}", "status": 400})
            return
        if not 1 <= size <= 1000:
            self._send(400, {"code": 20001, "message": "PageSize must be between 1 and 1000", "status": 400})
            return
        rows = []
        for m in self.state.listed("twilio", now):
            if ("To" in q and m["to"] != q["To"]) or ("From" in q and m["from"] != q["From"]):
                continue
            sent = self.state.status(m, now)[1]
            if bounds and sent is None:
                continue
            if sent is not None:
                day = sent.replace(hour=0, minute=0, second=0, microsecond=0)
                if "DateSent" in bounds and day != bounds["DateSent"]:
                    continue
                if "DateSent>" in bounds and sent < bounds["DateSent>"]:
                    continue
                if "DateSent<" in bounds and sent > bounds["DateSent<"] + (
                    timedelta(days=1) if len(q["DateSent<"]) == 10 else timedelta()
                ):
                    continue
            rows.append((sent or datetime.max.replace(tzinfo=UTC), m))
        rows.sort(key=lambda r: r[0], reverse=True)  # not yet sent first: the newest
        chunk = rows[offset : offset + size]
        base = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        filters = {k: v for k, v in q.items() if k not in ("Page", "PageToken", "PageSize")}

        def uri(p: int, token: int | None) -> str:
            extra = {"PageSize": size, "Page": p} | ({"PageToken": f"PA{token}"} if token is not None else {})
            return f"{base}?{urlencode(filters | extra)}"

        more = offset + size < len(rows)
        self._send(
            200,
            {
                "messages": [self._twilio_resource(m, now) for _, m in chunk],
                "page": page,
                "page_size": size,
                "start": offset,
                "end": offset + max(len(chunk), 1) - 1,
                "uri": uri(page, offset or None),
                "first_page_uri": uri(0, None),
                "next_page_uri": uri(page + 1, offset + size) if more else None,
                "previous_page_uri": uri(page - 1, max(0, offset - size)) if page else None,
            },
        )

    # -- Vonage -------------------------------------------------------------------------------------
    def _vonage(self, raw: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if (form.get("api_key"), form.get("api_secret")) != (VONAGE_KEY, VONAGE_SECRET):
            self._send(
                200, {"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}
            )
            return
        to, text, sender = form.get("to", ""), form.get("text", ""), form.get("from", "")
        if self._injected("vonage", to, lambda: self.state.record("vonage", to, sender, text)):
            return
        if "vonage" in self.state.out_of_credit:  # status 9 = out of credit, never "opted out" (docstring)
            self._send(200, VONAGE_OUT_OF_CREDIT)
            return
        m = self.state.record("vonage", to, sender, text, form.get("client-ref"))
        if to in self.state.opted_out:  # accepted; the carrier's refusal comes back as a receipt
            with self.state.lock:
                self.state.receipts.append(vonage_opt_out_receipt(m["sid"], to, sender))
        # HTTP 200, one entry per part with status "0" (https://developer.vonage.com/messaging/sms/guides/troubleshooting-sms).
        self._send(
            200,
            {
                "message-count": "1",
                "messages": [
                    {
                        "to": to,
                        "message-id": m["sid"],
                        "status": "0",
                        "remaining-balance": "15.53590000",
                        "message-price": "0.03330000",
                        "network": "23410",
                        "client-ref": form.get("client-ref", ""),
                    }
                ],
            },
        )

    def _vonage_search(self, q: dict[str, str]) -> None:
        """Search messages by ``date`` (YYYY-MM-DD) and ``to``, both required together (Developer API,
        https://developer.vonage.com/en/api/developer/messages#search-messages); ``items`` with the body."""
        if (q.get("api_key"), q.get("api_secret")) != (VONAGE_KEY, VONAGE_SECRET):
            self._send(401, {"error-code": "401", "error-code-label": "authentication failed"})
            return
        if not q.get("date") or not q.get("to"):
            self._send(400, {"error-code": "400", "error-code-label": "date and to are required together"})
            return
        now = datetime.now(UTC)
        items = []
        for m in self.state.listed("vonage", now):
            if m["to"] != q["to"] or m["created"].date().isoformat() != q["date"]:
                continue
            status = self.state.status(m, now)[0]
            items.append({"message-id": m["sid"], "account-id": VONAGE_KEY, "network": "23410", "from": m["from"],
                          "to": m["to"], "body": m["body"], "price": "0.03330000",
                          "date-received": m["created"].strftime("%Y-%m-%d %H:%M:%S"),
                          "final-status": "DELIVRD" if status == "delivered" else None, "type": "MT"})  # fmt: skip
        self._send(200, {"count": len(items), "items": items})

    # -- Plivo --------------------------------------------------------------------------------------
    def _plivo(self, raw: bytes) -> None:
        if self._basic() != (PLIVO_ID, PLIVO_TOKEN):
            self._send(401, {"api_id": "fake", "error": "authentication failed"})
            return
        data = json.loads(raw or b"{}")
        to, text, sender = str(data.get("dst", "")), str(data.get("text", "")), str(data.get("src", ""))
        if self._injected("plivo", to, lambda: self.state.record("plivo", to, sender, text)):
            return
        m = self.state.record("plivo", to, sender, text)
        if to in self.state.opted_out:  # accepted; the opt-out comes back in the status callback
            with self.state.lock:
                self.state.receipts.append(plivo_opt_out_receipt(m["sid"], to, sender))
        # HTTP 202, message_uuid a list (https://www.plivo.com/docs/messaging/api/message/send-a-message).
        self._send(
            202, {"api_id": str(uuid.uuid4()), "message": "message(s) queued", "message_uuid": [m["sid"]]}
        )

    def _plivo_list(self, q: dict[str, str]) -> None:
        """List all messages (https://www.plivo.com/docs/sms/api/message/list-all-messages/): Message Detail
        Records, most recent first; ``limit`` 1–20 (default 20) and ``offset``
        (https://www.plivo.com/docs/number-masking/api/pagination/); ``meta.next`` the next page's URL or
        null (https://docs.plivo.com/docs/messaging/api/response); ``message_time__gte``/``__gt``/``__lte``/
        ``__lt`` in ``YYYY-MM-DD HH:MM[:ss[.uuuuuu]]`` UTC, the last 24 hours when none is given;
        ``message_direction``; no text in the records."""
        if self._basic() != (PLIVO_ID, PLIVO_TOKEN):
            self._send(401, {"api_id": "fake", "error": "authentication failed"})
            return
        now = datetime.now(UTC)
        try:
            limit, offset = int(q.get("limit", "20")), int(q.get("offset", "0"))
            times = {
                op: datetime.fromisoformat(q[f"message_time__{op}"]).replace(tzinfo=UTC)
                for op in ("gte", "gt", "lte", "lt")
                if f"message_time__{op}" in q
            }
        except ValueError as exc:
            self._send(400, {"api_id": "fake", "error": f"invalid parameter: {exc}"})
            return
        if not 1 <= limit <= 20 or offset < 0:
            self._send(400, {"api_id": "fake", "error": "limit must be between 1 and 20"})
            return
        if not times:
            times = {"gte": now - timedelta(hours=24)}
        checks = {"gte": lambda a, b: a >= b, "gt": lambda a, b: a > b, "lte": lambda a, b: a <= b,
                  "lt": lambda a, b: a < b}  # fmt: skip
        rows = [
            m
            for m in self.state.listed("plivo", now)
            if all(checks[op](m["created"], at) for op, at in times.items())
            and q.get("message_direction", "outbound") == "outbound"
        ]
        rows.sort(key=lambda m: m["created"], reverse=True)
        chunk = rows[offset : offset + limit]
        base = f"/v1/Account/{PLIVO_ID}/Message/"

        def page(at: int) -> str:
            return f"{base}?{urlencode({**q, 'limit': limit, 'offset': at})}"

        objects = []
        for m in chunk:
            status = self.state.status(m, now)[0]
            objects.append({"message_uuid": m["sid"], "to_number": m["to"], "from_number": m["from"],
                            "message_direction": "outbound", "message_state": status, "message_type": "sms",
                            "message_time": m["created"].strftime("%Y-%m-%d %H:%M:%S+00:00"), "error_code": "",
                            "units": 1, "total_amount": "0.00350", "total_rate": "0.00350",
                            "resource_uri": f"{base}{m['sid']}/"})  # fmt: skip
        meta = {"limit": limit, "offset": offset, "total_count": len(rows),
                "next": page(offset + limit) if offset + limit < len(rows) else None,
                "previous": page(max(0, offset - limit)) if offset else None}  # fmt: skip
        self._send(200, {"api_id": str(uuid.uuid4()), "meta": meta, "objects": objects})

    # -- Telnyx -------------------------------------------------------------------------------------
    def _telnyx(self, raw: bytes) -> None:
        if self.headers.get("authorization") != f"Bearer {TELNYX_KEY}":
            self._send(401, {"errors": [{"code": "10009", "title": "Authentication failed"}]})
            return
        data = json.loads(raw or b"{}")
        to, text, sender = str(data.get("to", "")), str(data.get("text", "")), str(data.get("from", ""))
        key = self.headers.get("idempotency-key")
        # Idempotency (https://developers.telnyx.com/docs/development/api-fundamentals/idempotency): only
        # successful responses are replayed (24 h); the body must be byte-for-byte identical to count as the
        # same request — another body with the same key answers 422 while the original record exists.
        with self.state.lock:
            seen = self.state.idempotency.get(key) if key else None
        if seen is not None:
            original, answer = seen
            if original == raw:
                self._send(200, answer)
            else:
                self._send(
                    422,
                    {
                        "errors": [
                            {
                                "code": "10015",
                                "title": "Bad Request",
                                "detail": "Idempotency-Key was already used with a different request body",
                            }
                        ]
                    },
                )
            return

        def accept() -> dict[str, Any]:
            m = self.state.record("telnyx", to, sender, text, key)
            answer = {
                "data": {
                    "record_type": "message",
                    "direction": "outbound",
                    "id": m["sid"],
                    "type": "SMS",
                    "from": {"phone_number": sender},
                    "text": text,
                    "parts": 1,
                    "to": [{"phone_number": to, "status": "queued"}],
                    "received_at": m["created"].isoformat(),
                }
            }
            if key:
                with self.state.lock:
                    self.state.idempotency[key] = (raw, answer)
            return answer

        if self._injected("telnyx", to, accept):
            return
        if to in self.state.opted_out:
            self._send(*OPTED_OUT["telnyx"])
            return
        if to in self.state.blocked_later:
            answer = accept()
            with self.state.lock:
                self.state.receipts.append(telnyx_opt_out_receipt(answer["data"]["id"], to, sender))
            self._send(200, answer)
            return
        # HTTP 200 with the message, to[].status "queued" (https://developers.telnyx.com/api/messaging/send-message).
        self._send(200, accept())


class _Server(ThreadingHTTPServer):
    # A provider's front end accepts connections as they come. socketserver's default listen backlog is 5:
    # with 4 workers x 100 calls in flight, connections waited in the kernel's queue, and a request whose
    # client had already timed out (10 s) was accepted and processed up to a minute later, after the retry
    # had reconciled and found nothing: a duplicate no real provider produces (Twilio answers or refuses).
    request_queue_size = 1024
    daemon_threads = True


def make_server(port: int = 0, **config: Any) -> ThreadingHTTPServer:
    state = State(**config)
    handler = type("BoundHandler", (Handler,), {"state": state})
    return _Server(("127.0.0.1", port), handler)


class FakeProviders:
    """The fake server in a background thread of the test process. ``latency``: seconds, or a (min, max)
    range (default 100–300 ms); ``settle``: seconds from queued to sent; ``list_lag``: seconds before an
    accepted message shows in list/search answers."""

    def __init__(
        self, latency: Latency = DEFAULT_LATENCY, settle: float = 1.0, list_lag: float = 0.0
    ) -> None:
        self.server = make_server(latency=latency, settle=settle, list_lag=list_lag)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def state(self) -> State:
        return self.server.RequestHandlerClass.state  # type: ignore[attr-defined,no-any-return]

    def __enter__(self) -> FakeProviders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def received(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.received)

    def fail(self, **rule: Any) -> None:
        with self.state.lock:
            self.state.failures.append({"times": 1, **rule})

    def chaos(self, provider: str = "*", **rates: float) -> None:
        """Random faults on sends: ``error_rate`` (500), ``lost_answer_rate`` (accepted, then the connection
        dies), ``rate_limit_rate`` (the provider's 429, with ``retry_after`` seconds)."""
        with self.state.lock:
            self.state.chaos[provider] = dict(rates)

    @property
    def receipts(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.receipts)


class RemoteFake:
    """Control of a fake server running in another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=30)

    @property
    def received(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.client.get("/_fake/received").json()
        return data

    def fail(self, **rule: Any) -> None:
        self.client.post("/_fake/fail", json=rule).raise_for_status()

    def chaos(self, provider: str = "*", **rates: float) -> None:
        self.client.post("/_fake/chaos", json={"provider": provider, **rates}).raise_for_status()

    def optout(self, numbers: list[str]) -> None:
        self.client.post("/_fake/optout", json={"numbers": numbers}).raise_for_status()

    def configure(self, **values: float) -> None:
        """``settle`` and ``list_lag`` (seconds) of the server in the other process."""
        self.client.post("/_fake/config", json=values).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--latency",
        type=parse_latency,
        default=DEFAULT_LATENCY,
        help="seconds per request, or a range MIN-MAX (default 0.1-0.3)",
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds from queued to sent")
    parser.add_argument("--list-lag", type=float, default=0.0, help="seconds before a message is listed")
    args = parser.parse_args()
    server = make_server(args.port, latency=args.latency, settle=args.settle, list_lag=args.list_lag)
    print(f"listening {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
