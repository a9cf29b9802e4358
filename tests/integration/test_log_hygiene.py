"""What reaches the logs when recording a webhook fails, on both engines: the failure's type and place, never
the SMS body or the sender's number — though the database's own error repeats the row it refused."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote_plus

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from optline.adapters.db import api_keys
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from tests.support import outbound, signing, web

BODY = "STOP texting me, my PIN is WKQJ"  # letters no timestamp or id can hold
PERSON, SENDER = "+14155550134", "+14155550100"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def refusing(container: Container) -> Iterator[Container]:
    """A database that refuses any reply mentioning a PIN (what any failed write looks like to the route)."""
    with container.db.transaction() as conn:
        if container.settings.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_pin BEFORE INSERT ON inbound_messages "
                    "WHEN NEW.body LIKE '%PIN%' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "ALTER TABLE inbound_messages ADD CONSTRAINT refuse_pin "
                    "CHECK (body NOT LIKE '%PIN%') NOT VALID"
                )
            )
    yield container


def test_a_failed_webhook_logs_no_body_or_number(
    refusing: Container, caplog: pytest.LogCaptureFixture
) -> None:
    outbound.seed(refusing, 1)
    fx = signing.inbound_fixture("twilio", sid="SMpin", from_=PERSON, to=SENDER, body=BODY)
    signed = signing.sign("twilio", fx, "http://testserver", now=refusing.clock.now().timestamp())
    caplog.set_level(logging.INFO)
    with TestClient(create_app(refusing)) as client:
        response = client.request(signed.method, signed.path, headers=signed.headers, content=signed.body)
    assert response.status_code == 500  # not recorded: the provider retries
    (failure,) = [r for r in caplog.records if r.name == "optline.webhooks"]
    assert failure.levelno == logging.ERROR and "IntegrityError" in failure.getMessage()
    assert " at " in failure.getMessage()  # where it was raised: a developer's starting point
    assert BODY not in caplog.text and "WKQJ" not in caplog.text and PERSON not in caplog.text


# --- Representative traffic at INFO, in both log formats (issue 13, Logs) -------------------------------
# The code is letters that no timestamp, uuid or hex id can hold (CI once found "7731" in microseconds).
SECRET_BODY = "my door code is QZXW STOP"  # only ever in a message body
TEMPLATE = "Acme: the vermilion sale starts now. Reply STOP to opt out"  # only in a campaign's template


@pytest.fixture(params=["json", "text"])
def configured_logs(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """The process's logging as ``serve`` sets it up (logs.configure), written to a buffer instead of
    stderr; put back afterwards."""
    from optline import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure(request.param, logging.INFO)
    buffer = io.StringIO()
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    yield str(request.param), buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _signed_traffic(client: TestClient, container: Container) -> list[str]:
    """Signed inbound messages and status callbacks for every provider, a forged one, a Vonage GET (its
    whole SMS in the query string): what must not be logged from them (signatures, bodies)."""
    secrets: list[str] = []
    now = container.clock.now().timestamp()
    for i, provider in enumerate(["twilio", "vonage", "plivo", "telnyx", "simulator"]):
        fx = signing.inbound_fixture(provider, sid=f"SMhyg{i}", from_=PERSON, to=SENDER, body=SECRET_BODY)
        if provider == "vonage" and i % 2 == 1:
            fx["method"] = "GET"
        signed = signing.sign(provider, fx, "http://testserver", now=now)
        response = client.request(signed.method, signed.path, headers=signed.headers, content=signed.body)
        assert response.status_code == 200, response.text
        secrets += [v for k, v in signed.headers.items() if "signature" in k]
        if provider == "vonage":
            secrets.append(dict(parse_qsl(signed.url.partition("?")[2] or signed.body.decode()))["sig"])
        forged = {**signed.headers}
        for name in forged:
            if "signature" in name:
                forged[name] = "Zm9yZ2VkLXNpZ25hdHVyZS0xMjM0NQ=="
        client.request(
            signed.method, signed.path, headers=forged, content=signed.body.replace(b"QZXW", b"QZXV")
        )
    status = signing.status_fixture("twilio", sid="SMhyg0", status="delivered")
    signed = signing.sign("twilio", status, "http://testserver", now=now)
    assert client.post(signed.path, headers=signed.headers, content=signed.body).status_code == 200
    return secrets


def _api_traffic(client: TestClient, container: Container) -> list[str]:
    """API calls with a key (and with a wrong one): a contact, a consent change, a campaign with a template."""
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "hygiene", container.clock.now())
    auth = {"authorization": f"Bearer {key}"}
    assert client.post("/v1/contacts", json={"phone": "+14155550177"}, headers=auth).status_code == 201
    consent = {"program": "deals", "action": "opt_out", "evidence": {"note": SECRET_BODY}}
    assert client.post("/v1/contacts/+14155550177/consent", json=consent, headers=auth).status_code == 201
    campaign = {"program": "deals", "name": "vermilion", "template": TEMPLATE}
    assert client.post("/v1/campaigns", json=campaign, headers=auth).status_code == 201, "campaign"
    wrong = "olk_wrong_key_0123456789abcdef"
    assert client.get("/v1/programs", headers={"authorization": f"Bearer {wrong}"}).status_code == 401
    return [key, wrong]


def test_representative_traffic_logs_no_tokens_keys_signatures_or_bodies(
    container: Container, configured_logs: tuple[str, io.StringIO]
) -> None:
    fmt, buffer = configured_logs
    prog = web.program(container)
    web.subscriber(container, prog, PERSON)
    with TestClient(create_app(container)) as client:
        secrets = _signed_traffic(client, container) + _api_traffic(client, container)
    output = buffer.getvalue()
    lines = [line for line in output.splitlines() if line.strip()]
    # One access line per request (10 webhooks, a status callback, 4 API calls): the check below means something.
    assert sum("optline.access" in line for line in lines) == 15, output
    if fmt == "json":
        assert all(json.loads(line)["level"] for line in lines), output
    secrets += [signing.TWILIO_TOKEN, signing.VONAGE_SECRET, signing.PLIVO_TOKEN, signing.SECRET_KEY]
    for secret in secrets:
        assert secret not in output, f"a secret reached the {fmt} log: {secret[:6]}…"
    for text_ in (SECRET_BODY, "QZXW", "door code", "vermilion sale", quote_plus(SECRET_BODY)):
        assert text_ not in output, f"a message body reached the {fmt} log: {text_!r}"
