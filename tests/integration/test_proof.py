"""The consent proof for one number, over real dispatch through the simulator, on both engines: what
authorised each message, when suppression took effect, which checkpoint covers each event, and a rewrite
caught; and the dashboard's "Download evidence" behind a login."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from optline.adapters.clock import FrozenClock
from optline.adapters.db import programs
from optline.adapters.db.tables import messages
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.entrypoints import proof_formats
from optline.entrypoints.api.app import create_app
from optline.entrypoints.worker import run
from optline.services import checkpoints, consent, users
from optline.services import proof as proof_service
from tests.integration.test_web_dashboard import PASSWORD, _login
from tests.support import tamper, web

PHONE = "+14155550134"


@pytest.fixture
def signed(container: Container, tmp_path: Path) -> Container:
    container.settings = container.settings.model_copy(
        update={
            "ledger_signing_key_file": str(tmp_path / "k"),
            "ledger_checkpoint_log": str(tmp_path / "log"),
        }
    )
    return container


def _story(c: Container, clock: FrozenClock) -> dict[str, int]:
    """Opt in (API, with its disclosure), one message sent, a checkpoint, STOP, a message suppressed."""
    prog = web.program(c)
    person = web.subscriber(c, prog, PHONE)
    first = web.message_with_link(c, prog, person)
    run(c, threading.Event(), once=True)  # the worker also writes the scheduled checkpoint
    clock.advance(hours=1)
    with c.db.transaction() as conn:
        consent.record(
            conn,
            clock,
            contact_id=person["id"],
            program=prog,
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    clock.advance(minutes=2)
    second = web.message_with_link(c, prog, person)
    run(c, threading.Event(), once=True)
    return {"contact": person["id"], "first": first["id"], "second": second["id"]}


def web_program_id(c: Container) -> int:
    with c.db.read() as conn:
        return int((programs.get_by_name(conn, "deals") or {})["id"])


def _bundle(c: Container) -> dict:  # type: ignore[type-arg]
    with c.db.read() as conn:
        found, problems, source = checkpoints.for_proof(c, conn)
        return proof_service.build(
            conn,
            PHONE,
            "US",
            now=c.clock.now(),
            checkpoints=found,
            checkpoint_problems=problems,
            checkpoint_source=source,
        )


def test_the_proof_ties_each_message_to_its_consent_and_the_opt_out_to_its_suppression(
    signed: Container, clock: FrozenClock
) -> None:
    ids = _story(signed, clock)
    clock.advance(days=1)
    with signed.db.transaction() as conn:  # the person's own START: newer than any checkpoint
        program = {"id": web_program_id(signed), "brand": "Acme Coffee"}
        consent.record(
            conn,
            clock,
            contact_id=ids["contact"],
            program=program,
            action=Action.OPT_IN,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "START"},
        )
    p = _bundle(signed)
    opt_in, opt_out, start = p["consent_events"]
    assert opt_in["action"] == "opt_in" and opt_in["evidence"]["disclosure_text"] == "Reply STOP to opt out"
    # Each event names the first checkpoint that covers it: the first and the second worker run's.
    assert opt_in["covered_by"] == "log:1, signed 2026-11-26T19:00:00.000000Z"
    assert opt_out["covered_by"] == "log:2, signed 2026-11-26T20:02:00.000000Z"
    assert start["covered_by"] == proof_service.NEWER and start["checkpoint"] is None
    first, second = p["messages"]
    # The simulator answers each hand-over with a delivery receipt, as a provider does.
    assert first["id"] == ids["first"] and first["status"] == "delivered"
    assert first["authorised_by"]["event_id"] == opt_in["id"]
    assert first["optout_instruction"].startswith("Stop: http://testserver/u/")
    assert (
        second["id"] == ids["second"] and second["status"] == "suppressed" and second["authorised_by"] is None
    )
    (stop,) = p["opt_outs"]
    assert stop["event_id"] == opt_out["id"] and stop["first_suppressed"]["message_id"] == ids["second"]
    assert stop["sent_after_on_older_consent"] == []
    v = p["verification"]
    assert (
        v["ok"] and v["events_checked"] == 3 and "agrees with the latest signed checkpoint" in v["statement"]
    )
    assert json.loads(proof_formats.render(p, "json")) == p

    checkpoints.take(signed)  # now the opt-out is covered too
    assert all(e["checkpoint"] for e in _bundle(signed)["consent_events"])


def test_the_proof_reports_a_rewritten_chain(signed: Container, clock: FrozenClock) -> None:
    ids = _story(signed, clock)
    checkpoints.take(signed)
    tamper.rewrite_event(signed, ids["contact"], 1, disclosure_text="Something the person never saw")
    v = _bundle(signed)["verification"]
    assert not v["ok"] and v["statement"].startswith("VERIFICATION FAILED")
    assert "changed, removed or reordered" in v["statement"]


def test_download_evidence_needs_a_login_and_names_the_file(signed: Container, clock: FrozenClock) -> None:
    _story(signed, clock)
    with signed.db.transaction() as conn:
        users.create(conn, signed.clock, "maria", PASSWORD)
    client = TestClient(create_app(signed))
    url = f"/dashboard/contacts/proof?phone={PHONE.replace('+', '%2B')}&format=json"
    assert client.get(url, follow_redirects=False).status_code == 303  # to the login page
    _login(client)
    page = client.get(f"/dashboard/contacts?phone={PHONE.replace('+', '%2B')}")
    assert "Download evidence" in page.text and "/dashboard/contacts/proof?phone=%2B14155550134" in page.text
    r = client.get(url)
    assert r.status_code == 200 and r.json()["contact"]["phone"] == PHONE
    assert r.headers["content-disposition"] == 'attachment; filename="consent-evidence-14155550134.json"'
    pdf = client.get(url.replace("json", "pdf"))
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert client.get(url.replace("json", "docx")).status_code == 400
    assert client.get("/dashboard/contacts/proof?phone=%2B14155550999").status_code == 404


def test_a_message_handed_over_after_the_opt_out_on_older_consent_is_named(
    signed: Container, clock: FrozenClock
) -> None:
    """What invariant 2 forbids, forced into the table as a bug would write it: the proof must show it."""
    ids = _story(signed, clock)
    opt_in = _bundle(signed)["consent_events"][0]
    with signed.db.transaction() as conn:
        conn.execute(
            update(messages)
            .where(messages.c.id == ids["second"])
            .values(status="sent", handed_over_at=clock.now(), consent_event_id=opt_in["id"])
        )
    (stop,) = _bundle(signed)["opt_outs"]
    assert stop["sent_after_on_older_consent"] == [ids["second"]]
