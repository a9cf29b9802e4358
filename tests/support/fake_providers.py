"""Local HTTP servers that speak each SMS provider's send API, record what they received, and fail on demand.

One server answers all four providers on their real paths:
- Twilio  ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (basic auth; form To, From|MessagingServiceSid,
  Body, StatusCallback) and ``GET`` of the same path (list, filtered by To/From) for reconciliation;
- Vonage  ``POST /sms/json`` (form api_key, api_secret, to, from, text) and ``GET /search/messages``;
- Plivo   ``POST /v1/Account/{auth_id}/Message/`` (basic auth, JSON src, dst, text) and ``GET`` (list);
- Telnyx  ``POST /v2/messages`` (Bearer; JSON from, to, text; ``Idempotency-Key`` deduplicates).

Control (JSON over HTTP, so a test can drive a server in another process): ``GET /_fake/received``,
``POST /_fake/fail`` (inject failures), ``POST /_fake/optout`` (numbers the "carrier" reports as opted
out), ``POST /_fake/credit`` (``{"provider": "vonage", "empty": true}``: the account is out of credit),
``POST /_fake/latency``, ``POST /_fake/reset``, ``GET /_fake/receipts``.

What each provider does with a recipient who opted out (its documentation, not our code's wishes):
- Twilio refuses the send: HTTP 400, code 21610 (https://www.twilio.com/docs/api/errors/21610);
- Telnyx refuses it: HTTP 409, code 40300 (https://developers.telnyx.com/api/errors/40300);
- Vonage accepts it (status 0) and posts a delivery receipt with status failed/rejected and err-code 9
  (https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers);
- Plivo accepts it (202) and posts a status callback with Status failed and ErrorCode 200
  (https://www.plivo.com/docs/messaging/troubleshooting/error-codes).
The receipts the fake "would post" are kept in ``receipts`` (signing.sign's fixture shape): a test posts
them to optline's webhook, in any order relative to the send call's answer.
Vonage out of credit answers HTTP 200 with the message's status "9", "Partner Quota Violation"
(https://developer.vonage.com/en/api-errors/sms).

In a thread: ``with FakeProviders() as fake: fake.url …``. As a process:
``python -m tests.support.fake_providers --port 0`` prints ``listening <port>`` on its first line.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

TWILIO_SID, TWILIO_TOKEN = "AC" + "0" * 32, "twilio-test-token"
VONAGE_KEY, VONAGE_SECRET = "vonagekey", "vonage-test-secret"
PLIVO_ID, PLIVO_TOKEN = "MA" + "0" * 18, "plivo-test-token"
TELNYX_KEY = "KEYtelnyxtest"
# The send answers for an opted-out recipient of the providers that refuse at send time (module docstring).
OPTED_OUT = {"twilio": (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}),
             "telnyx": (409, {"errors": [{"code": "40300", "title": "Blocked due to STOP message",
                                          "detail": "Messages cannot be sent from your number to this destination "
                                                    "because the destination has sent your number a stop message."}]})}  # fmt: skip
VONAGE_OUT_OF_CREDIT = {
    "message-count": "1",
    "messages": [{"status": "9", "error-text": "Partner Quota Violation"}],
}


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


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.opted_out: set[str] = set()
        self.out_of_credit: set[str] = set()  # providers whose account has no credit left
        self.receipts: list[dict[str, Any]] = []  # status callbacks the provider would post (fixture shape)
        self.latency = 0.0
        self.idempotency: dict[str, str] = {}

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
        return None

    def record(self, provider: str, to: str, from_: str, body: str, key: str | None = None) -> dict[str, Any]:
        msg = {"provider": provider, "to": to, "from": from_, "body": body, "idempotency_key": key,
               "sid": f"{provider[:2].upper()}{uuid.uuid4().hex}", "at": datetime.now(UTC).isoformat()}  # fmt: skip
        with self.lock:
            self.received.append(msg)
        return msg


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
        self._send(int(rule.get("status", 500)), rule.get("body", {"message": "injected failure"}), headers)
        return True

    # -- routes -------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        s = self.state
        if url.path == "/_fake/received":
            with s.lock:
                self._send(200, list(s.received))
        elif url.path == "/_fake/receipts":
            with s.lock:
                self._send(200, list(s.receipts))
        elif url.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
            with s.lock:
                items = [m for m in s.received if m["provider"] == "twilio" and m["to"] == q.get("To")
                         and ("From" not in q or m["from"] == q["From"])]  # fmt: skip
            self._send(200, {"messages": [{"sid": m["sid"], "to": m["to"], "from": m["from"], "body": m["body"],
                                           "status": "sent"} for m in items], "next_page_uri": None})  # fmt: skip
        elif url.path == "/search/messages":
            with s.lock:
                items = [m for m in s.received if m["provider"] == "vonage" and m["to"] == q.get("to")]
            self._send(200, {"count": len(items), "items": [{"message-id": m["sid"], "to": m["to"], "from": m["from"],
                                                              "body": m["body"]} for m in items]})  # fmt: skip
        elif url.path == f"/v1/Account/{PLIVO_ID}/Message/":
            with s.lock:
                items = [m for m in s.received if m["provider"] == "plivo"]
            self._send(200, {"objects": [{"message_uuid": m["sid"], "to_number": m["to"], "from_number": m["from"],
                                          "message_time": m["at"]} for m in items]})  # fmt: skip
        else:
            self._send(404, {"message": f"no route GET {url.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._body()
        s = self.state
        if url.path.startswith("/_fake/"):
            data = json.loads(raw or b"{}")
            with s.lock:
                if url.path == "/_fake/fail":
                    s.failures.append({"times": 1, **data})
                elif url.path == "/_fake/optout":
                    s.opted_out.update(data["numbers"])
                elif url.path == "/_fake/credit":
                    (s.out_of_credit.add if data.get("empty") else s.out_of_credit.discard)(data["provider"])
                elif url.path == "/_fake/latency":
                    s.latency = float(data["seconds"])
                elif url.path == "/_fake/reset":
                    s.reset()
            self._send(200, {"ok": True})
            return
        if s.latency:
            time.sleep(s.latency)
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

    def _twilio(self, raw: bytes) -> None:
        if self._basic() != (TWILIO_SID, TWILIO_TOKEN):
            self._send(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        to, body = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid") or ""
        if not to or not body or not sender:
            self._send(
                400,
                {"code": 21604, "message": "A 'To', 'Body' and 'From' or 'MessagingServiceSid' are required"},
            )
            return
        if self._injected("twilio", to, lambda: self.state.record("twilio", to, sender, body)):
            return
        if to in self.state.opted_out:
            self._send(*OPTED_OUT["twilio"])
            return
        m = self.state.record("twilio", to, sender, body)
        self._send(201, {"sid": m["sid"], "to": to, "from": sender, "body": body, "status": "queued"})

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
        if "vonage" in self.state.out_of_credit:
            self._send(200, VONAGE_OUT_OF_CREDIT)
            return
        m = self.state.record("vonage", to, sender, text, form.get("client-ref"))
        if to in self.state.opted_out:  # accepted; the carrier's refusal comes back as a receipt
            with self.state.lock:
                self.state.receipts.append(vonage_opt_out_receipt(m["sid"], to, sender))
        self._send(
            200, {"message-count": "1", "messages": [{"status": "0", "message-id": m["sid"], "to": to}]}
        )

    def _plivo(self, raw: bytes) -> None:
        if self._basic() != (PLIVO_ID, PLIVO_TOKEN):
            self._send(401, {"error": "authentication failed"})
            return
        data = json.loads(raw or b"{}")
        to, text, sender = str(data.get("dst", "")), str(data.get("text", "")), str(data.get("src", ""))
        if self._injected("plivo", to, lambda: self.state.record("plivo", to, sender, text)):
            return
        m = self.state.record("plivo", to, sender, text)
        if to in self.state.opted_out:  # accepted; the opt-out comes back in the status callback
            with self.state.lock:
                self.state.receipts.append(plivo_opt_out_receipt(m["sid"], to, sender))
        self._send(
            202, {"api_id": str(uuid.uuid4()), "message": "message(s) queued", "message_uuid": [m["sid"]]}
        )

    def _telnyx(self, raw: bytes) -> None:
        if self.headers.get("authorization") != f"Bearer {TELNYX_KEY}":
            self._send(401, {"errors": [{"code": "10009", "title": "Authentication failed"}]})
            return
        data = json.loads(raw or b"{}")
        to, text, sender = str(data.get("to", "")), str(data.get("text", "")), str(data.get("from", ""))
        key = self.headers.get("idempotency-key")
        with self.state.lock:
            seen = self.state.idempotency.get(key or "")
        if seen:
            self._send(200, {"data": {"id": seen, "to": [{"phone_number": to}], "text": text}})
            return

        def accept() -> None:
            m = self.state.record("telnyx", to, sender, text, key)
            with self.state.lock:
                self.state.idempotency[key or m["sid"]] = m["sid"]

        if self._injected("telnyx", to, accept):
            return
        if to in self.state.opted_out:
            self._send(*OPTED_OUT["telnyx"])
            return
        accept()
        with self.state.lock:
            sid = self.state.idempotency[key] if key else self.state.received[-1]["sid"]
        self._send(200, {"data": {"id": sid, "to": [{"phone_number": to}], "text": text}})


def make_server(port: int = 0) -> ThreadingHTTPServer:
    state = State()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


class FakeProviders:
    """The fake server in a background thread of the test process."""

    def __init__(self) -> None:
        self.server = make_server()
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

    def optout(self, numbers: list[str]) -> None:
        self.client.post("/_fake/optout", json={"numbers": numbers}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = make_server(args.port)
    print(f"listening {server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
