"""Inbound routing answers from a per-process table of sender numbers (adapters/db/programs.py ``cached``):
what another process changes is found without waiting for the table to expire when it matters — a sender
number no cached program owns is read again before the reply is called unrouted."""

from __future__ import annotations

from sqlalchemy import select

from optline.adapters.db.tables import inbound_messages
from optline.bootstrap import Container, build
from optline.domain.classify import Intent
from optline.services.programs import create_program, program_for_sender
from tests.support import outbound


def test_a_program_created_by_another_process_owns_its_number_at_once(container: Container) -> None:
    with container.db.transaction() as conn:
        outbound.make_program(conn, container.clock, sender_numbers=["+14155550100"])
        assert program_for_sender(conn, "+14155550100")["name"] == "deals"  # type: ignore[index]
        assert program_for_sender(conn, "+14155550177") is None  # (cached: no program owns it yet)
    other = build(container.settings, clock=container.clock)  # another process, its own cache
    try:
        with other.db.transaction() as conn:
            create_program(
                conn,
                other.clock,
                help_contact="https://acme.example/help",
                name="news",
                brand="Acme",
                sender_numbers=["(415) 555-0177"],
            )
    finally:
        other.close()
    with container.db.read() as conn:
        found = program_for_sender(conn, "+14155550177")
    assert found is not None and found["name"] == "news"


def test_a_stop_to_a_number_added_elsewhere_is_routed_not_revoke_all(container: Container) -> None:
    from optline.adapters.providers.base import InboundSms
    from optline.services.inbound import record_inbound

    with container.db.transaction() as conn:
        deals = outbound.make_program(conn, container.clock, sender_numbers=["+14155550100"])
        ids = outbound.insert_contacts(conn, container.clock.now(), 0, 1)
        outbound.subscribe(conn, container.clock, deals, ids)
        program_for_sender(conn, "+14155550100")  # the table is cached now, without "news"
    other = build(container.settings, clock=container.clock)
    try:
        with other.db.transaction() as conn:
            news = outbound.make_program(conn, other.clock, "news", sender_numbers=["+14155550188"])
            outbound.subscribe(conn, other.clock, news, ids)
    finally:
        other.close()
    sms = InboundSms(
        provider="twilio",
        provider_message_id="SMcache1",
        from_phone=outbound.phone(0),
        to_phone="+14155550188",
        body="STOP",
        received_at=container.clock.now(),
    )
    with container.db.transaction() as conn:
        result = record_inbound(conn, container.clock, sms)
        row = conn.execute(select(inbound_messages).where(inbound_messages.c.id == result.inbound_id)).one()
    assert result.classification is not None and result.classification.intent is Intent.OPTOUT
    assert result.program_id == news["id"] and row.program_id == news["id"] and not row.review
