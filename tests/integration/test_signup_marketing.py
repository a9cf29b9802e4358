"""No marketing reaches a number whose sign-up was never confirmed: the real audience, campaign and dispatcher
(simulator provider), on both engines. Only the prompt itself goes to a pending number."""

from __future__ import annotations

from sqlalchemy import select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts
from optline.adapters.db.tables import messages, simulator_messages
from optline.adapters.providers.simulator.send import SimulatorSender
from optline.bootstrap import Container
from optline.domain.consent import Channel
from optline.domain.phones import parse_phone
from optline.services import audience, campaigns, outbox, signup
from optline.services.dispatch import DispatchConfig, Dispatcher
from optline.services.outbox import Kind
from optline.services.programs import create_program

SENDER = "+14155550100"
CONFIRMED, PENDING, EXPIRED, WEB_PENDING = "+12125550101", "+12125550102", "+12125550103", "+12125550104"


def drain(container: Container, clock: FrozenClock) -> None:
    dispatcher = Dispatcher(
        container.db,
        clock,
        SimulatorSender(container.db, clock),
        DispatchConfig(public_url="http://testserver"),
        worker_id="w1",
    )
    while dispatcher.run_once().claimed:
        pass


def test_unconfirmed_signups_get_no_marketing(container: Container, clock: FrozenClock) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=[SENDER],
            double_opt_in=True,
            join_keywords=["JOIN"],
            optout_scope="program",
        )
        people = {
            p: contacts.get_or_create(conn, parse_phone(p), clock.now())[0]
            for p in (CONFIRMED, PENDING, EXPIRED)
        }

    def text(phone: str, body: str) -> bool:
        with container.db.transaction() as conn:
            return signup.handle_inbound(
                conn,
                clock,
                program=program,
                contact=people[phone],
                text=body,
                evidence={"from_phone": phone, "to_phone": SENDER},
            )

    text(EXPIRED, "JOIN")
    clock.advance(hours=25)
    with container.db.transaction() as conn:
        assert signup.expire_due(conn, clock) == 1
    for phone in (CONFIRMED, PENDING):
        text(phone, "JOIN")
    text(CONFIRMED, "YES")
    web = {"ip": "203.0.113.5", "user_agent": "UA", "source_url": "http://testserver/join/deals"}
    with container.db.transaction() as conn:
        signup.start_for_phone(
            conn, clock, program=program, phone=WEB_PENDING, region="US", channel=Channel.WEB, evidence=web
        )

    with container.db.read() as conn:
        dry = audience.dry_run(conn, program["id"])
    assert dry.recipients == 1 and dry.excluded.get("not_confirmed") == 3

    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, clock, program="deals", name="launch", template="New beans are in!")
        campaigns.start(conn, clock, campaign, public_url=container.settings.public_url)
        # A marketing message slipped past the audience (a stale list, a bug): the send-time check stops it.
        outbox.enqueue(
            conn,
            clock,
            program_id=program["id"],
            contact_id=people[PENDING]["id"],
            to_phone=PENDING,
            kind=Kind.MARKETING,
            body="Acme Coffee: sale! Reply STOP to opt out.",
            idempotency_key="stray-marketing",
        )
    drain(container, clock)

    with container.db.read() as conn:
        delivered = conn.execute(
            select(simulator_messages.c.to_phone, simulator_messages.c.body).where(
                simulator_messages.c.direction == "out"
            )
        ).all()
        stray = conn.execute(select(messages).where(messages.c.idempotency_key == "stray-marketing")).one()
    marketing_to = {to for to, body in delivered if "New beans" in body or "sale!" in body}
    assert marketing_to == {CONFIRMED}
    assert stray.status == "suppressed"
    prompts_to = sorted(to for to, body in delivered if "Reply Y to confirm" in body)
    assert prompts_to == sorted([CONFIRMED, PENDING, EXPIRED, WEB_PENDING])  # each got its one prompt


def test_the_worker_expires_unconfirmed_signups(container: Container, clock: FrozenClock) -> None:
    import threading

    from optline.adapters.db import signups as signup_repo
    from optline.entrypoints.worker import run

    with container.db.transaction() as conn:
        program = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=[SENDER],
            double_opt_in=True,
            join_keywords=["JOIN"],
        )
        person, _ = contacts.get_or_create(conn, parse_phone(PENDING), clock.now())
        signup.start(
            conn,
            clock,
            program=program,
            contact=person,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "JOIN"},
        )
    clock.advance(hours=24, minutes=1)
    run(container, threading.Event(), once=True)
    with container.db.read() as conn:
        [row] = signup_repo.listing(conn)
    assert row["status"] == "expired"
