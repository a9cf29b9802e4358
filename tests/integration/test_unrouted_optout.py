"""An opt-out sent to a number that belongs to no program (issue 12, item 3), on SQLite and PostgreSQL.

It must still stop every program the person is subscribed to (invariant 3; the FCC's revoke-all direction),
with the reason in the ledger evidence, and wait in the review queue so an operator sees it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import consent_events, inbound_messages, messages
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import parse_phone
from optline.entrypoints.api.app import create_app
from optline.services import consent, review, users
from optline.services import dashboard as read
from optline.services.inbound import InboundResult, record_inbound
from optline.services.programs import create_program

PERSON, UNKNOWN = "+14155550134", "+14155559999"
WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/j",
}


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    """Two brands; the person is subscribed to three programs (one pending), and never joined a fourth."""
    clock = container.clock
    with container.db.transaction() as conn:
        made = {
            name: create_program(
                conn,
                clock,
                help_contact="https://acme.example/help",
                name=name,
                brand=brand,
                optout_scope="program",
                sender_numbers=[n],
            )
            for name, brand, n in [
                ("deals", "Acme Coffee", "+14155550100"),
                ("news", "Acme Coffee", "+14155550101"),
                ("books", "Beta Books", "+14155550102"),
                ("other", "Gamma Gym", "+14155550103"),
            ]
        }
        person, _ = contact_repo.get_or_create(conn, parse_phone(PERSON), clock.now())
        for name in ("deals", "news"):
            consent.record(
                conn,
                clock,
                contact_id=person["id"],
                program=made[name],
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
        consent.record(
            conn,
            clock,
            contact_id=person["id"],
            program={**made["books"], "double_opt_in": True},
            action=Action.OPT_IN,
            channel=Channel.WEB,
            evidence=WEB,
        )
    return {**made, "person": person}


def receive(container: Container, body: str, to: str = UNKNOWN, sid: str = "SM1", **kw: Any) -> InboundResult:
    sms = InboundSms(provider="twilio", provider_message_id=sid, from_phone=PERSON, to_phone=to, body=body)
    with container.db.transaction() as conn:
        return record_inbound(conn, container.clock, sms, **kw)


def statuses(container: Container, world: dict[str, Any]) -> dict[str, Status]:
    with container.db.read() as conn:
        return {
            n: consent.current(conn, world["person"]["id"], world[n])[0]
            for n in ("deals", "news", "books", "other")
        }


def rows(container: Container, table: Any) -> list[dict[str, Any]]:
    with container.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


@pytest.mark.parametrize("body", ["STOP", "please stop texting me"])
def test_an_opt_out_to_a_number_of_no_program_stops_every_subscription(
    container: Container, world: dict[str, Any], body: str
) -> None:
    # The person also got a message from "deals" last: the old fallback would have stopped only that program.
    with container.db.transaction() as conn:
        conn.execute(
            messages.insert().values(
                program_id=world["deals"]["id"],
                contact_id=world["person"]["id"],
                to_phone=PERSON,
                from_phone="+14155550100",
                kind="marketing",
                body="Deals!",
                segments=1,
                status="sent",
                idempotency_key="m1",
                attempts=0,
                created_at=container.clock.now(),
                updated_at=container.clock.now(),
            )
        )
    result = receive(container, body)
    assert statuses(container, world) == {
        "deals": Status.UNSUBSCRIBED,
        "news": Status.UNSUBSCRIBED,
        "books": Status.UNSUBSCRIBED,
        "other": Status.NEVER,  # never joined Gamma Gym: nothing to stop there
    }
    opt_outs = [e for e in rows(container, consent_events) if e["action"] == "opt_out"]
    assert [(e["brand"], e["program_id"]) for e in opt_outs] == [("Acme Coffee", None), ("Beta Books", None)]
    for event in opt_outs:
        assert (
            event["evidence"]["unrouted"]
            == f"sent to {UNKNOWN}, which is no program's sender number or short code"
        )
        assert event["evidence"]["message_text"] == body and event["evidence"]["to_phone"] == UNKNOWN
    (inbound,) = rows(container, inbound_messages)
    assert (
        inbound["review"]
        and inbound["program_id"] is None
        and inbound["consent_event_id"] == opt_outs[0]["id"]
    )
    assert result.consent_event_id == opt_outs[0]["id"] and result.program_id is None
    # One confirmation, from the number they texted, naming both brands.
    (confirmation,) = [m for m in rows(container, messages) if m["kind"] == "confirmation"]
    assert confirmation["from_phone"] == UNKNOWN and confirmation["to_phone"] == PERSON
    assert "Acme Coffee and Beta Books" in confirmation["body"] and "START" in confirmation["body"]
    # The review queue shows it, marked as already applied.
    with container.db.read() as conn:
        (queued,) = read.review_queue(conn)
    assert queued["id"] == inbound["id"] and queued["stopped_everything"] is True


def test_no_confirmation_without_a_number_to_answer_from(container: Container, world: dict[str, Any]) -> None:
    receive(container, "STOP", to="AcmeAlerts")  # an alphanumeric ID cannot be answered
    assert set(statuses(container, world).values()) == {Status.UNSUBSCRIBED, Status.NEVER}
    assert [m for m in rows(container, messages) if m["kind"] == "confirmation"] == []


def test_a_provider_that_already_confirmed_gets_no_second_confirmation(
    container: Container, world: dict[str, Any]
) -> None:
    receive(container, "STOP", provider_opt_out="STOP")  # Twilio Advanced Opt-Out answered it already
    assert statuses(container, world)["news"] is Status.UNSUBSCRIBED
    assert [m for m in rows(container, messages) if m["kind"] == "confirmation"] == []


def test_other_replies_to_a_number_of_no_program_change_nothing(
    container: Container, world: dict[str, Any]
) -> None:
    before = statuses(container, world)
    receive(container, "what time do you open?")
    assert statuses(container, world) == before
    assert rows(container, inbound_messages)[0]["review"] is False


def test_the_operator_can_only_mark_it_seen(container: Container, world: dict[str, Any]) -> None:
    receive(container, "STOP")
    (inbound,) = rows(container, inbound_messages)
    events_before = len(rows(container, consent_events))
    with (
        container.db.transaction() as conn,
        pytest.raises(review.ReviewError, match="only the person can undo"),
    ):
        review.decide(conn, container.clock, inbound["id"], review.Decision.NOT_OPT_OUT, operator="maria")
    with container.db.transaction() as conn:
        assert (
            review.decide(conn, container.clock, inbound["id"], review.Decision.SEEN, operator="maria")
            is None
        )
    assert len(rows(container, consent_events)) == events_before
    assert set(statuses(container, world).values()) == {Status.UNSUBSCRIBED, Status.NEVER}
    with container.db.read() as conn:
        assert read.review_queue(conn) == []


def test_an_unclear_reply_to_a_number_of_no_program_is_decided_for_every_program(
    container: Container, world: dict[str, Any]
) -> None:
    receive(container, "No", sid="SMno")  # unclear: held for review; no program, so nothing held
    (inbound,) = rows(container, inbound_messages)
    assert inbound["review"] and inbound["consent_event_id"] is None
    with container.db.read() as conn:
        assert read.review_queue(conn)[0]["stopped_everything"] is False
    with container.db.transaction() as conn, pytest.raises(review.ReviewError, match="needs a decision"):
        review.decide(conn, container.clock, inbound["id"], review.Decision.SEEN, operator="maria")
    with container.db.transaction() as conn:
        event = review.decide(conn, container.clock, inbound["id"], review.Decision.OPT_OUT, operator="maria")
    assert event is not None and event["channel"] == "admin" and event["evidence"]["operator"] == "maria"
    assert (
        event["evidence"]["unrouted"]
        == f"sent to {UNKNOWN}, which is no program's sender number or short code"
    )
    assert set(statuses(container, world).values()) == {Status.UNSUBSCRIBED, Status.NEVER}


def test_the_dashboard_review_list_shows_it(
    container: Container, world: dict[str, Any], clock: FrozenClock
) -> None:
    receive(container, "please stop texting me")
    with container.db.transaction() as conn:
        users.create(conn, clock, "maria", "correct-horse-battery")
    client = TestClient(create_app(container))
    login = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": "maria", "password": "correct-horse-battery", "csrf": csrf})
    page = client.get("/dashboard/review")
    assert page.status_code == 200
    assert "a number that belongs to no program" in page.text and "please stop texting me" in page.text
    assert 'value="seen"' in page.text and 'value="not_opt_out"' not in page.text
    (inbound,) = rows(container, inbound_messages)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = client.post(
        f"/dashboard/review/{inbound['id']}", data={"csrf": csrf, "decision": "seen"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert "a number that belongs to no program" not in client.get("/dashboard/review").text
