"""The keyword double opt-in through the real webhook routes, signed with each provider's own SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import ledger
from optline.adapters.db.tables import messages
from optline.bootstrap import Container
from optline.config import Settings
from optline.domain.consent import Status
from optline.entrypoints.api.app import create_app
from optline.services import consent
from optline.services.programs import create_program
from tests.support import signing

PERSON, SENDER = "+14155550134", "+14155550100"
PROVIDERS = ["twilio", "vonage", "plivo", "telnyx", "simulator"]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def program(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        return create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=[SENDER],
            double_opt_in=True,
            join_keywords=["JOIN", "DEALS"],
        )


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def reply(client: TestClient, clock: FrozenClock, provider: str, body: str, sid: str) -> None:
    fx = signing.inbound_fixture(provider, sid=sid, from_=PERSON, to=SENDER, body=body)
    s = signing.sign(provider, fx, "http://testserver", now=clock.now().timestamp())
    response = client.request(s.method, s.path, headers=s.headers, content=s.body)
    assert response.status_code == 200, response.text


def state(container: Container, program: dict[str, Any]) -> tuple[Status, list[dict[str, Any]], list[Any]]:
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, PERSON)
        if contact is None:
            return Status.NEVER, [], []
        sent = conn.execute(select(messages).where(messages.c.contact_id == contact["id"])).all()
        return consent.current(conn, contact["id"], program)[0], ledger.history(conn, contact["id"]), sent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_keyword_join_and_yes_through_signed_webhooks(
    provider: str, container: Container, program: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, provider, "Deals", f"SMjoin{provider}000000000000000000001")
    status, history, sent = state(container, program)
    assert status is Status.PENDING
    [prompt] = sent
    assert prompt.kind == "signup" and "Reply Y to confirm" in prompt.body and "STOP to cancel" in prompt.body
    assert prompt.from_phone == SENDER
    assert history[0]["evidence"]["provider"] == provider

    clock.advance(minutes=3)
    reply(client, clock, provider, "Yes", f"SMyes{provider}0000000000000000000001")
    status, history, sent = state(container, program)
    assert status is Status.SUBSCRIBED
    assert [e["action"] for e in history] == ["opt_in", "opt_in_confirmed"]
    proof = history[1]["evidence"]
    assert proof["message_text"] == "Yes" and proof["prompt"]["body"] == prompt.body
    assert proof["provider"] == provider and proof["first_step"]["evidence"]["message_text"] == "Deals"
    assert [m.kind for m in sent] == ["signup", "confirmation"]


def test_forged_join_records_nothing(
    container: Container, program: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    fx = signing.inbound_fixture(
        "twilio", sid="SMforged00000000000000000000000001", from_=PERSON, to=SENDER, body="JOIN"
    )
    s = signing.sign("twilio", fx, "http://testserver", now=clock.now().timestamp())
    forged = s.body.replace(b"JOIN", b"DEALS")
    assert client.request(s.method, s.path, headers=s.headers, content=forged).status_code in (401, 403)
    assert state(container, program) == (Status.NEVER, [], [])


def test_stop_while_pending_wins_and_a_later_yes_does_not_subscribe(
    container: Container, program: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, "twilio", "JOIN", "SMa0000000000000000000000000000001")
    reply(client, clock, "twilio", "STOP", "SMa0000000000000000000000000000002")
    assert state(container, program)[0] is Status.UNSUBSCRIBED
    clock.advance(minutes=10)
    reply(client, clock, "twilio", "YES", "SMa0000000000000000000000000000003")
    status, history, sent = state(container, program)
    # YES after STOP is an explicit opt-in word: it starts a new double opt-in, it never subscribes directly.
    assert status is Status.PENDING
    assert "opt_in_confirmed" not in [e["action"] for e in history]
    assert sent[-1].kind == "signup"


def test_unsolicited_yes_on_a_double_opt_in_program_only_starts_a_signup(
    container: Container, program: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, "twilio", "YES", "SMb0000000000000000000000000000001")
    status, history, sent = state(container, program)
    assert status is Status.PENDING and [e["action"] for e in history] == ["opt_in"]
    assert [m.kind for m in sent] == ["signup"]
