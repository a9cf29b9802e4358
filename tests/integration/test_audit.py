"""The list review on both engines: a seeded database with known problems planted; the audit finds every
one of them and nothing else, stores the run, and --fix applies only the safe fixes, as ledger events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from optline.adapters.db import contacts, ledger
from optline.adapters.db.tables import consent_events, dnc_numbers, messages, reassigned_numbers
from optline.adapters.db.tables import contacts as contacts_table
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import audit, consent
from optline.services.programs import create_program
from tests.support import outbox_rows as rows

WEB = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "disclosure_text": "Reply STOP to opt out",
       "source_url": "https://acme.example/join"}  # fmt: skip


def d(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def seeded(container: Container) -> dict[str, Any]:
    """Clean contacts that must produce nothing, and one contact per planted problem."""
    clock = container.clock  # 2026-11-26 19:00 UTC
    s: dict[str, Any] = {}
    with container.db.transaction() as conn:
        deals = s["deals"] = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        news = s["news"] = create_program(
            conn, clock, help_contact="https://acme.example/help", name="news", brand="Acme"
        )
        campaign = rows.campaign(conn, deals, "black-friday", clock.now(), status="sending")

        def person(name: str, phone: str, **extra: Any) -> dict[str, Any]:
            c, _ = contacts.get_or_create(conn, parse_phone(phone), clock.now(), **extra)
            s[name] = c
            return c

        def raw_person(name: str, phone: str) -> dict[str, Any]:
            """A row written around the normalising code path (an old import, a direct SQL load)."""
            now = clock.now()
            row = conn.execute(
                insert(contacts_table)
                .values(phone=phone, number_type="unknown", attributes={}, created_at=now, updated_at=now)
                .returning(*contacts_table.c)
            ).one()
            s[name] = dict(row._mapping)
            return s[name]

        def web_opt_in(c: dict[str, Any], program: dict[str, Any], at: str) -> None:
            consent.record(
                conn,
                clock,
                contact_id=c["id"],
                program=program,
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
                occurred_at=d(at),
            )

        def import_opt_in(
            c: dict[str, Any], program: dict[str, Any], at: str, evidence: dict[str, Any]
        ) -> None:
            consent.record_opt_ins(
                conn, clock, program, Channel.IMPORT, [consent.BatchOptIn(c["id"], evidence, d(at))]
            )

        # ---- clean: none of these may show up
        web_opt_in(person("good_web", "+14155550101"), deals, "2026-06-01")
        rows.message(
            conn, program=deals, contact=s["good_web"], at=clock.now(), campaign=campaign, status="queued"
        )
        consent.record(
            conn,
            clock,
            contact_id=person("good_keyword_dnc", "+14155550102")["id"],
            program=news,
            action=Action.OPT_IN,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "JOIN"},
            occurred_at=d("2026-05-01"),
        )
        import_opt_in(person("good_old_but_engaged", "+14155550103"), deals, "2024-01-01", {"source": "crm"})
        rows.inbound(
            conn, contact=s["good_old_but_engaged"], program=deals, body="thanks!", at=d("2026-11-01")
        )
        web_opt_in(person("good_opted_out", "+14155550104"), deals, "2026-06-01")
        consent.record(
            conn,
            clock,
            contact_id=s["good_opted_out"]["id"],
            program=deals,
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
        rows.message(
            conn,
            program=deals,
            contact=s["good_opted_out"],
            at=d("2026-10-01"),
            campaign=campaign,
            status="suppressed",
        )
        web_opt_in(person("good_reassigned_before", "+14155550105"), deals, "2026-06-01")
        web_opt_in(person("good_recent_review", "+14155550106"), deals, "2026-06-01")
        rows.inbound(
            conn,
            contact=s["good_recent_review"],
            program=deals,
            body="maybe later",
            review=True,
            at=clock.now() - timedelta(hours=3),
        )
        rows.inbound(
            conn,
            contact=s["good_recent_review"],
            program=deals,
            body="hmm",
            review=True,
            at=d("2026-11-01"),
            decided_at=d("2026-11-02"),
        )
        web_opt_in(
            person("good_own_spelling", "+14155550107", attributes={"mobile": "(415) 555-0107"}),
            deals,
            "2026-06-01",
        )
        person("canonical", "+14155550177")
        web_opt_in(s["canonical"], deals, "2026-06-01")

        # ---- planted problems
        import_opt_in(person("no_evidence", "+14155550201"), deals, "2026-10-01", {"file_line": 7})
        import_opt_in(person("stale", "+14155550202"), news, "2024-02-01", {"source": "crm"})
        web_opt_in(person("opted_out_queued", "+14155550203"), deals, "2026-06-01")
        rows.message(
            conn,
            program=deals,
            contact=s["opted_out_queued"],
            at=clock.now(),
            campaign=campaign,
            status="queued",
        )
        consent.record(
            conn,
            clock,
            contact_id=s["opted_out_queued"]["id"],
            program=deals,
            action=Action.OPT_OUT,
            channel=Channel.SMS_TEXT,
            evidence={"message_text": "please stop"},
        )
        web_opt_in(person("held_queued", "+14155550204"), deals, "2026-06-01")
        consent.record(
            conn,
            clock,
            contact_id=s["held_queued"]["id"],
            program=deals,
            action=Action.REVIEW_HOLD,
            channel=Channel.SMS_TEXT,
            evidence={"message_text": "who is this"},
        )
        rows.message(
            conn, program=deals, contact=s["held_queued"], at=clock.now(), campaign=campaign, status="queued"
        )
        import_opt_in(raw_person("invalid", "+15550000000"), deals, "2026-10-01", {"source": "crm"})
        web_opt_in(person("landline", "+442079460018"), news, "2026-06-01")
        web_opt_in(
            person("dup_attribute", "+14155550205", attributes={"alt_phone": "(415) 555-0101"}),
            news,
            "2026-06-01",
        )
        raw_person("dup_national", "4155550177")  # the canonical contact's number, national form, no consent
        import_opt_in(person("dnc", "+14155550206"), deals, "2026-10-01", {"source": "crm"})
        web_opt_in(person("reassigned", "+14155550207"), deals, "2026-03-01")
        web_opt_in(person("review_waiting", "+14155550208"), deals, "2026-06-01")
        rows.inbound(
            conn,
            contact=s["review_waiting"],
            program=deals,
            body="not sure i want these",
            review=True,
            at=clock.now() - timedelta(days=2),
        )

        for phone in ("+14155550206", "+14155550102"):
            conn.execute(
                insert(dnc_numbers).values(phone=phone, source="national DNC", imported_at=clock.now())
            )
        for phone, when in (("+14155550207", "2026-05-01"), ("+14155550105", "2026-01-01")):
            conn.execute(
                insert(reassigned_numbers).values(
                    phone=phone, disconnected_at=d(when), source="RND", imported_at=clock.now()
                )
            )
    return s


def _expected(s: dict[str, Any]) -> set[tuple[str, int]]:
    R = audit.Reason
    return {
        (R.NO_CONSENT_EVIDENCE, s["no_evidence"]["id"]),
        (R.STALE_CONSENT, s["stale"]["id"]),
        (R.SUPPRESSED_IN_QUEUE, s["opted_out_queued"]["id"]),
        (R.SUPPRESSED_IN_QUEUE, s["held_queued"]["id"]),
        (R.INVALID_NUMBER, s["invalid"]["id"]),
        (R.NOT_MOBILE, s["landline"]["id"]),
        (R.DUPLICATE_NUMBER, s["dup_attribute"]["id"]),
        (R.DUPLICATE_NUMBER, s["dup_national"]["id"]),
        (R.DNC_WITHOUT_EXPRESS_CONSENT, s["dnc"]["id"]),
        (R.REASSIGNED_AFTER_CONSENT, s["reassigned"]["id"]),
        (R.REVIEW_OVERDUE, s["review_waiting"]["id"]),
    }


def _cfg() -> audit.AuditConfig:
    return audit.AuditConfig(consent_max_age=timedelta(days=540))


def test_audit_finds_every_planted_problem_and_nothing_else(
    container: Container, seeded: dict[str, Any]
) -> None:
    result = audit.run(container.db, container.clock, _cfg())
    found = [(f.reason, f.contact_id) for f in result.findings]
    assert len(found) == len(set(found))
    assert set(found) == _expected(seeded)
    for f in result.findings:
        assert f.detail and f.action and f.phone
    queued = next(f for f in result.findings if f.contact_id == seeded["opted_out_queued"]["id"])
    assert queued.proof["subscription_status"] == "unsubscribed" and "suppresses" in queued.action
    dup = next(f for f in result.findings if f.contact_id == seeded["dup_national"]["id"])
    assert dup.proof["same_as_contact_id"] == seeded["canonical"]["id"]
    # Stored, and readable back as the latest run.
    with container.db.read() as conn:
        latest = audit.latest_run(conn)
    assert latest is not None and latest.id == result.id
    assert {(f.reason, f.contact_id) for f in latest.findings} == _expected(seeded)
    assert latest.summary == result.summary and not latest.fix


def test_program_filter(container: Container, seeded: dict[str, Any]) -> None:
    result = audit.run(container.db, container.clock, _cfg(), program=seeded["news"])
    assert {(f.reason, f.contact_id) for f in result.findings} == {
        (audit.Reason.STALE_CONSENT, seeded["stale"]["id"]),
        (audit.Reason.NOT_MOBILE, seeded["landline"]["id"]),
        (audit.Reason.DUPLICATE_NUMBER, seeded["dup_attribute"]["id"]),
    }


def test_fix_holds_and_cancels_as_ledger_events_never_deleting(
    container: Container, seeded: dict[str, Any]
) -> None:
    with container.db.read() as conn:
        events_before = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
    fixed = audit.run(container.db, container.clock, _cfg(), fix=True)
    by_contact = {(f.reason, f.contact_id): f for f in fixed.findings}
    R = audit.Reason
    for name, reason in (
        ("no_evidence", R.NO_CONSENT_EVIDENCE),
        ("invalid", R.INVALID_NUMBER),
        ("landline", R.NOT_MOBILE),
        ("dnc", R.DNC_WITHOUT_EXPRESS_CONSENT),
        ("reassigned", R.REASSIGNED_AFTER_CONSENT),
        ("review_waiting", R.REVIEW_OVERDUE),
    ):
        assert (by_contact[(reason, seeded[name]["id"])].fixed or "").startswith("review_hold event"), name
    for name in ("opted_out_queued", "held_queued"):
        assert (by_contact[(R.SUPPRESSED_IN_QUEUE, seeded[name]["id"])].fixed or "").startswith("cancelled")
    for reason, name in ((R.STALE_CONSENT, "stale"), (R.DUPLICATE_NUMBER, "dup_national")):
        assert by_contact[(reason, seeded[name]["id"])].fixed is None  # advice only: needs a person
    with container.db.read() as conn:
        holds = conn.execute(
            select(consent_events).where(
                consent_events.c.action == "review_hold", consent_events.c.channel == "admin"
            )
        ).all()
        events_after = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
        statuses = dict(conn.execute(select(messages.c.contact_id, messages.c.status)).all())
        assert ledger.verify(conn).ok
    assert len(holds) == 6 and events_after == events_before + 6
    assert all(
        h.evidence["operator"] == "optline audit" and h.evidence["audit_run_id"] == fixed.id for h in holds
    )
    assert statuses[seeded["opted_out_queued"]["id"]] == "cancelled"
    assert statuses[seeded["good_web"]["id"]] == "queued"  # a sendable contact's message is untouched

    again = audit.run(container.db, container.clock, _cfg())
    assert {(f.reason, f.contact_id) for f in again.findings} == {
        (R.STALE_CONSENT, seeded["stale"]["id"]),
        (R.DUPLICATE_NUMBER, seeded["dup_attribute"]["id"]),
        (R.DUPLICATE_NUMBER, seeded["dup_national"]["id"]),
        (R.REVIEW_OVERDUE, seeded["review_waiting"]["id"]),  # still undecided, but now held
    }
    assert next(f for f in again.findings if f.reason is R.REVIEW_OVERDUE).fix is None


def test_scheduled_audit_runs_when_due(container: Container, seeded: dict[str, Any]) -> None:
    first = audit.run_scheduled_audit(container)
    assert first is not None and first.trigger == "schedule"
    assert audit.run_scheduled_audit(container) is None
    container.clock.advance(hours=25)  # type: ignore[attr-defined]
    second = audit.run_scheduled_audit(container)
    assert second is not None and second.id != first.id
