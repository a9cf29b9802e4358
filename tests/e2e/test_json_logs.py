"""A real ``optline serve`` (OPTLINE_ENV=test: JSON logs by default), on SQLite and PostgreSQL: every log line
is one JSON object with time, level, logger, message and request_id; the X-Request-ID a client sends (or one
made for it) is answered and carried by the lines of that request; a webhook's body, its signature and the
provider's token are in no line."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from optline.bootstrap import Container
from tests.support import outbound, signing
from tests.support.server import serve

SENDER = "+14155550100"
SECRET_WORD = "xylophone"  # only in a message body


def json_lines(output: list[str]) -> list[dict[str, Any]]:
    """The log lines (the startup banner on stdout is for people, not JSON)."""
    return [json.loads(line) for line in output if line.startswith("{")]


def test_log_lines_are_json_with_the_request_id_and_no_bodies_or_secrets(live: Container) -> None:
    outbound.seed(live, 2)
    with serve(live.settings.database_url, OPTLINE_TWILIO_AUTH_TOKEN=signing.TWILIO_TOKEN) as server:

        def post(body: str, sid: str, **headers: str) -> tuple[httpx.Response, signing.Signed]:
            fx = signing.inbound_fixture("twilio", sid=sid, from_=outbound.phone(0), to=SENDER, body=body)
            signed = signing.sign("twilio", fx, server.url)
            response = httpx.post(
                server.url + signed.path,
                content=signed.body,
                headers={**signed.headers, **headers},
                timeout=30,
            )
            return response, signed

        stop, stop_signed = post("STOP", "SMlog1", **{"X-Request-ID": "req-stop-1"})
        question, question_signed = post(f"Is the {SECRET_WORD} sale on Friday?", "SMlog2")
        forged, _ = post("STOP", "SMlog3", **{"X-Request-ID": "req-forged", "x-twilio-signature": "forged"})
        junk = httpx.get(server.url + "/healthz", headers={"X-Request-ID": 'x", "level": "ERROR'}, timeout=30)
        scraped = httpx.get(server.url + "/metrics", timeout=30)
        server.process.terminate()
        assert server.process.wait(timeout=60) == 0
        deadline = time.monotonic() + 60  # the last lines reach the test's reader thread
        while not any("Finished server process" in line for line in server.output):
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.02)
    assert (stop.status_code, question.status_code, forged.status_code, scraped.status_code) == (
        200,
        200,
        403,
        200,
    )
    assert stop.headers["x-request-id"] == "req-stop-1"
    generated = question.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["x-request-id"])  # a forged log line is not echoed

    lines = json_lines(server.output)
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)", line["time"]), line
    access = {line["request_id"]: line for line in lines if line["logger"] == "optline.access"}
    assert access["req-stop-1"] | {"duration_ms": 0} == access["req-stop-1"] | {
        "method": "POST",
        "route": "/webhooks/twilio/sms",
        "status": 200,
        "duration_ms": 0,
    }
    assert access[generated]["status"] == 200 and access["req-forged"]["status"] == 403
    assert access[scraped.headers["x-request-id"]]["route"] == "/metrics"
    (refused,) = [line for line in lines if line["logger"] == "optline.webhooks"]
    assert refused["level"] == "WARNING" and refused["request_id"] == "req-forged"
    assert "does not match" in refused["message"]
    assert any(line["logger"].startswith("uvicorn") and line["request_id"] is None for line in lines)

    everything = "".join(server.output)
    assert SECRET_WORD not in everything
    assert signing.TWILIO_TOKEN not in everything
    for signed in (stop_signed, question_signed):
        assert signed.headers["x-twilio-signature"] not in everything
    assert '"level": "ERROR"' not in everything
