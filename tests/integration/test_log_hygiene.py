"""What reaches the logs when recording a webhook fails, on both engines: the failure's type and place, never
the SMS body or the sender's number — though the database's own error repeats the row it refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from tests.support import outbound, signing

BODY = "STOP texting me, my PIN is 4417"
PERSON, SENDER = "+14155550134", "+14155550100"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def refusing(container: Container) -> Iterator[Container]:
    """A database that refuses any reply mentioning a PIN (what any failed write looks like to the route)."""
    with container.db.transaction() as conn:
        if container.settings.is_sqlite:
            conn.execute(text("CREATE TRIGGER refuse_pin BEFORE INSERT ON inbound_messages "
                              "WHEN NEW.body LIKE '%PIN%' BEGIN SELECT RAISE(ABORT, 'refused'); END"))  # fmt: skip
        else:
            conn.execute(text("ALTER TABLE inbound_messages ADD CONSTRAINT refuse_pin "
                              "CHECK (body NOT LIKE '%PIN%') NOT VALID"))  # fmt: skip
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
    assert BODY not in caplog.text and "4417" not in caplog.text and PERSON not in caplog.text
