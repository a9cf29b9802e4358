"""Inbound replies read by the compositional classifier, on SQLite and PostgreSQL: answers in the person's
language, the review tier right after a marketing message, and the review queue showing what a reply answered."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest
from sqlalchemy import select, update

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import consent_events, inbound_messages, messages
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import parse_phone
from optline.services import consent, outbox
from optline.services import dashboard as read
from optline.services.inbound import InboundResult, record_inbound
from optline.services.outbox import Kind
from optline.services.programs import create_program

PERSON, SENDER = "+14155550134", "+14155550100"
WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/j",
}
_ids = count()


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        deals = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            sender_numbers=[SENDER],
        )
        person, _ = contact_repo.get_or_create(conn, parse_phone(PERSON), container.clock.now())
        consent.record(
            conn,
            container.clock,
            contact_id=person["id"],
            program=deals,
            action=Action.OPT_IN,
            channel=Channel.WEB,
            evidence=WEB,
        )
    return {"deals": deals, "person": person}


def receive(container: Container, body: str) -> InboundResult:
    sms = InboundSms("simulator", f"SM{next(_ids)}", PERSON, SENDER, body)
    with container.db.transaction() as conn:
        return record_inbound(conn, container.clock, sms)


def sent(container: Container, kind: Kind = Kind.CONFIRMATION) -> list[str]:
    with container.db.read() as conn:
        return list(
            conn.execute(
                select(messages.c.body).where(messages.c.kind == kind.value).order_by(messages.c.id)
            ).scalars()
        )


def status(container: Container, world: dict[str, Any]) -> tuple[Status, bool]:
    with container.db.read() as conn:
        return consent.current(conn, world["person"]["id"], world["deals"])


def marketing_sent(container: Container, world: dict[str, Any], body: str = "Weekend deal: 2 for 1") -> None:
    with container.db.transaction() as conn:
        msg = outbox.enqueue(
            conn,
            container.clock,
            program_id=world["deals"]["id"],
            contact_id=world["person"]["id"],
            to_phone=PERSON,
            kind=Kind.MARKETING,
            body=body,
            idempotency_key=f"m{next(_ids)}",
        )
        conn.execute(
            update(messages)
            .where(messages.c.id == msg["id"])
            .values(status="delivered", sent_at=container.clock.now())
        )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("dejen de mandarme mensajes", "te has dado de baja"),
        ("ne m'envoyez plus de messages", "désabonné"),
        ("não quero mais receber mensagens", "cancelou a inscrição"),
        ("please stop texting me", "unsubscribed"),
    ],
)
def test_opt_out_is_confirmed_in_the_language_of_the_reply(
    container: Container, world: dict, body: str, words: str
) -> None:
    receive(container, body)
    assert status(container, world)[0] is Status.UNSUBSCRIBED
    (confirmation,) = sent(container)
    assert words in confirmation and "Acme" in confirmation and "START" in confirmation


def test_help_and_rejoin_answer_in_the_language_of_the_reply(container: Container, world: dict) -> None:
    receive(container, "AJUDA")
    (help_,) = sent(container, Kind.HELP)
    assert "ajuda em https://acme.example/help" in help_ and "A frequência de mensagens varia" in help_
    receive(container, "SAIR")
    container.clock.advance(minutes=10)
    receive(container, "VOLTAR")
    assert status(container, world)[0] is Status.SUBSCRIBED
    assert "você se inscreveu em deals" in sent(container)[-1]


def test_a_custom_help_text_stays_as_configured(container: Container, world: dict) -> None:
    with container.db.transaction() as conn:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="vip",
            brand="Acme VIP",
            sender_numbers=["+14155550111"],
            help_text="Acme VIP: call 555-0100.",
        )
    sms = InboundSms("simulator", "SMvip", PERSON, "+14155550111", "AIDE")
    with container.db.transaction() as conn:
        record_inbound(conn, container.clock, sms)
    assert sent(container, Kind.HELP) == ["Acme VIP: call 555-0100."]


def test_other_sense_changes_nothing(container: Container, world: dict) -> None:
    marketing_sent(container, world)
    result = receive(container, "stop calling my mom, she is not the customer")
    assert result.classification is not None and result.classification.reason.startswith("other-sense:")
    assert status(container, world) == (Status.SUBSCRIBED, False)


def test_a_cue_right_after_marketing_holds_it_and_the_queue_shows_what_it_answered(
    container: Container, world: dict, clock: FrozenClock
) -> None:
    marketing_sent(container, world, "Acme: weekend deal, 2 for 1. Reply STOP to opt out")
    clock.advance(hours=2)
    result = receive(container, "can you cancel it?")
    assert result.classification is not None and result.classification.review
    assert status(container, world) == (Status.SUBSCRIBED, True)  # marketing held until a person decides
    with container.db.read() as conn:
        (item,) = read.review_queue(conn)
        (hold,) = conn.execute(select(consent_events).where(consent_events.c.action == "review_hold")).all()
    assert item["answered"] == "Acme: weekend deal, 2 for 1. Reply STOP to opt out"
    assert item["reason"] == "review:cue:en:cancel+it" and item["consent_event_id"] == hold.id


def test_the_same_cue_long_after_marketing_is_an_ordinary_reply(
    container: Container, world: dict, clock: FrozenClock
) -> None:
    marketing_sent(container, world)
    clock.advance(days=5)
    result = receive(container, "can you cancel it?")
    assert result.classification is not None and not result.classification.review
    assert status(container, world) == (Status.SUBSCRIBED, False)
    with container.db.read() as conn:
        assert read.review_queue(conn) == []
        assert conn.execute(select(inbound_messages.c.review)).scalar_one() is False
