"""Deleting ledger events is detected on both engines, with or without a digest, and every chain is named."""

from __future__ import annotations

from optline.adapters.db import contacts, ledger
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import consent
from optline.services.programs import create_program
from tests.support import tamper

WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/join",
}


def _opted_out(container: Container, count: int) -> list[int]:
    """``count`` contacts who opted in on the web and then texted STOP (two events each)."""
    ids = []
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        for i in range(count):
            cid = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), container.clock.now())[0][
                "id"
            ]
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=program,
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=program,
                action=Action.OPT_OUT,
                channel=Channel.SMS_KEYWORD,
                evidence={"message_text": "STOP"},
            )
            ids.append(cid)
    return ids


def _verify(container: Container) -> ledger.VerifyResult:
    with container.db.read() as conn:
        return ledger.verify(conn)


def test_deleting_an_opt_out_is_detected_when_no_digest_was_ever_recorded(container: Container) -> None:
    (cid,) = _opted_out(container, 1)
    assert _verify(container).ok and _verify(container).digests == 0
    tamper.delete_newest_event(container, cid)  # the chain alone still looks whole: seq 1, intact
    result = _verify(container)
    assert not result.ok
    (broken,) = result.breaks
    assert broken.contact_id == cid
    assert "unsubscribed" in broken.reason and "not in the contact's chain" in broken.reason


def test_every_broken_chain_is_reported(container: Container) -> None:
    a, _untouched, b = _opted_out(container, 3)
    tamper.delete_newest_event(container, a)
    tamper.delete_newest_event(container, b)
    result = _verify(container)
    assert {br.contact_id for br in result.breaks} == {a, b}


def test_a_hidden_opt_out_is_caught_by_an_earlier_digest(container: Container) -> None:
    """Projection edited to match the shortened chain: only a digest recorded before the edit can tell
    (CLI commands that changed the ledger, workers and a clean ``ledger verify`` record them)."""
    a, b = _opted_out(container, 2)
    with container.db.transaction() as conn:
        assert ledger.record_digest(conn, container.clock.now())
    tamper.hide_newest_event(container, a)
    tamper.hide_newest_event(container, b)
    result = _verify(container)
    assert {br.contact_id for br in result.breaks} == {a, b}
    assert all("missing or changed" in br.reason for br in result.breaks)
