"""The webhooks' lane (entrypoints/api/webhook_lane.py) answers what its former layers answered: the request
id on every answer and in one access line, 404 / 405 / a trailing slash's redirect as Starlette's router
gives them, a Content-Length that is not a number refused unread, and a 500 for anything unexpected (the
error still reaching the server). The HTTP layer only: SQLite."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api import webhooks
from optline.entrypoints.api.app import create_app
from tests.support import signing

pytestmark = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


def _access(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if r.name == "optline.access"]


def test_unknown_paths_and_methods_are_answered_as_the_router_answers_them(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optline.access")
    with TestClient(create_app(container)) as client:
        unknown = client.post("/webhooks/nobody/sms", headers={"X-Request-ID": "req-unknown"})
        wrong_method = client.get("/webhooks/twilio/sms", headers={"X-Request-ID": "req-get"})
        slash = client.post("/webhooks/twilio/sms/", follow_redirects=False)
    assert unknown.status_code == 404 and unknown.headers["x-request-id"] == "req-unknown"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.headers["x-request-id"] == "req-get"
    assert slash.status_code == 307 and slash.headers["location"].endswith("/webhooks/twilio/sms")
    lines = [(r.method, r.route, r.status) for r in _access(caplog)]
    assert lines == [
        ("POST", "unmatched", 404),  # (the access line never names a path no route took)
        ("GET", "/webhooks/twilio/sms", 405),
        ("POST", "unmatched", 307),
    ]


def test_an_unexpected_error_is_a_500_with_the_request_id_and_reaches_the_server(
    container: Container, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(webhooks, "_read", broken)
    caplog.set_level(logging.INFO, logger="optline.access")
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        response = client.post("/webhooks/twilio/sms", headers={"X-Request-ID": "req-broken"})
    assert response.status_code == 500 and response.text == "Internal Server Error"
    assert response.headers["x-request-id"] == "req-broken"
    assert [(r.route, r.status) for r in _access(caplog)] == [("/webhooks/twilio/sms", 500)]
    with TestClient(create_app(container)) as client, pytest.raises(RuntimeError, match="unexpected"):
        client.post("/webhooks/twilio/sms")  # re-raised: uvicorn logs it


def test_a_content_length_that_is_not_a_number_is_refused_unread(container: Container) -> None:
    app = create_app(container)
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"Body=STOP", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/webhooks/twilio/sms", "root_path": "", "query_string": b"",
        "headers": [(b"content-length", b"nine"), (b"content-type", b"application/x-www-form-urlencoded")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and b"not a number" in sent[1]["body"]
    assert (b"x-request-id", sent[0]["headers"][-1][1]) in sent[0]["headers"]
    assert read == 0
