"""The consent service and ledger on both engines: projection, rules, chain, tamper detection."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from optline.adapters.db import contacts, ledger
from optline.adapters.db.tables import consent_events, subscriptions
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, ConsentRefused, Status
from optline.domain.phones import parse_phone
from optline.services import consent
from optline.services.programs import create_program

WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/join",
}


@pytest.fixture
def world(container: Container) -> dict:
    with container.db.transaction() as conn:
        a = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )
        b = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme",
            optout_scope="program",
        )
        other = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="other", brand="Globex"
        )
        contact, _ = contacts.get_or_create(conn, parse_phone("+14155550134"), container.clock.now())
    return {"deals": a, "news": b, "other": other, "contact": contact}


def _status(container: Container, contact_id: int, program: dict) -> tuple[Status, bool]:
    with container.db.read() as conn:
        return consent.current(conn, contact_id, program)


def test_opt_in_then_brand_wide_opt_out(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        for name in ("deals", "news", "other"):
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=world[name],
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
    assert _status(container, cid, world["deals"]) == (Status.SUBSCRIBED, False)
    with container.db.transaction() as conn:
        change = consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    assert change.event["program_id"] is None  # the program's policy is brand-wide
    assert change.was_subscribed
    assert _status(container, cid, world["deals"])[0] is Status.UNSUBSCRIBED
    assert _status(container, cid, world["news"])[0] is Status.UNSUBSCRIBED
    assert _status(container, cid, world["other"])[0] is Status.SUBSCRIBED  # another brand is untouched


def test_program_scoped_opt_out_leaves_sibling(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        for name in ("deals", "news"):
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=world[name],
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["news"],
            action=Action.OPT_OUT,
            channel=Channel.WEB,
            evidence={},
        )
    assert _status(container, cid, world["news"])[0] is Status.UNSUBSCRIBED
    assert _status(container, cid, world["deals"])[0] is Status.SUBSCRIBED


def test_import_never_resubscribes_and_brand_optout_covers_new_programs(
    container: Container, world: dict
) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.OPT_OUT,
            channel=Channel.SMS_TEXT,
            evidence={"message_text": "stop texting me"},
        )
        later = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="later", brand="Acme"
        )
    for program in (world["deals"], later):
        with container.db.transaction() as conn, pytest.raises(ConsentRefused):
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=program,
                action=Action.OPT_IN,
                channel=Channel.IMPORT,
                evidence={"source": "crm"},
            )
    # Their own keyword (START) does bring them back.
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.OPT_IN,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "START"},
        )
    assert _status(container, cid, world["deals"])[0] is Status.SUBSCRIBED


def test_opt_in_without_evidence_is_refused_and_records_nothing(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn, pytest.raises(ConsentRefused, match="disclosure_text"):
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.OPT_IN,
            channel=Channel.API,
            evidence={"source": "crm"},
        )
    with container.db.read() as conn:
        assert conn.execute(select(consent_events)).first() is None
        assert conn.execute(select(subscriptions)).first() is None


def test_review_hold_is_a_flag_that_clears(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.OPT_IN,
            channel=Channel.WEB,
            evidence=WEB,
        )
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.REVIEW_HOLD,
            channel=Channel.SMS_TEXT,
            evidence={"message_text": "no"},
        )
    assert _status(container, cid, world["deals"]) == (Status.SUBSCRIBED, True)
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["deals"],
            action=Action.REVIEW_CLEARED,
            channel=Channel.ADMIN,
            evidence={"operator": "ann"},
        )
    assert _status(container, cid, world["deals"]) == (Status.SUBSCRIBED, False)


def test_ledger_verifies_and_detects_tampering(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        for action in (Action.OPT_IN, Action.OPT_OUT, Action.OPT_IN):  # back by their own START
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=world["deals"],
                action=action,
                channel=Channel.SMS_KEYWORD,
                evidence={**WEB, "message_text": "START"},
            )
        ledger.record_digest(conn, container.clock.now())
    with container.db.read() as conn:
        result = ledger.verify(conn)
    assert result.ok and result.events == 3 and result.digests == 1

    # The database refuses edits outright; an attacker with the power to lift that is still caught.
    with pytest.raises(Exception, match="append-only"), container.db.transaction() as conn:
        conn.execute(consent_events.update().values(evidence={}))
    _force(container, 'UPDATE consent_events SET evidence = \'{"ip": "1.2.3.4"}\' WHERE seq = 2')
    with container.db.read() as conn:
        result = ledger.verify(conn)
    assert not result.ok
    assert result.breaks[0].seq == 2 and "content changed" in result.breaks[0].reason


def test_deleting_newest_events_is_detected_by_digest(container: Container, world: dict) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        for action in (Action.OPT_IN, Action.OPT_OUT):
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=world["deals"],
                action=action,
                channel=Channel.WEB,
                evidence=WEB,
            )
        ledger.record_digest(conn, container.clock.now())
    _force(container, "DELETE FROM consent_events WHERE seq = 2")  # hides the opt-out; chain alone looks fine
    with container.db.read() as conn:
        result = ledger.verify(conn)
    assert not result.ok
    assert any("missing" in b.reason for b in result.breaks)


def _force(container: Container, sql: str) -> None:
    """Bypass the append-only guard, as someone with database superuser rights could."""
    if container.db.is_sqlite:
        import sqlite3

        raw = sqlite3.connect(container.db.engine.url.database or "")
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("DROP TRIGGER IF EXISTS consent_events_no_update")
        raw.execute("DROP TRIGGER IF EXISTS consent_events_no_delete")
        raw.execute(sql)
        raw.commit()
        raw.close()
        return
    with container.db.engine.connect() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")
        conn.execute(text(sql))
        conn.commit()
