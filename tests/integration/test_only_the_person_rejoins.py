"""After a person's opt-out only the person brings themselves back (issue 12, item 7; invariant 4), on
SQLite and PostgreSQL: through the API, an import (CLI or dashboard) and an API sign-up.
"""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import api_keys
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import consent_events, messages, signups
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.consent import Status
from optline.entrypoints.api.app import create_app
from optline.services import consent, users
from optline.services.contacts_import import import_file
from optline.services.inbound import record_inbound
from optline.services.programs import create_program

PERSON, SENDER = "+14155550134", "+14155550100"
EVIDENCE = {"source": "checkout page", "disclosure_text": "Acme deals, 4 msgs/mo. Reply STOP to opt out."}
SIGNUP = {
    "phone": "(415) 555-0134",
    "source": "checkout page, order 1042",
    "disclosure_text": EVIDENCE["disclosure_text"],
}


@pytest.fixture
def program(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        return create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            sender_numbers=[SENDER],
        )


@pytest.fixture
def client(container: Container, program: dict[str, Any]) -> TestClient:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "crm", container.clock.now())
    return TestClient(create_app(container), headers={"Authorization": f"Bearer {key}"})


def text(container: Container, body: str, sid: str) -> None:
    sms = InboundSms(
        provider="twilio", provider_message_id=sid, from_phone=PERSON, to_phone=SENDER, body=body
    )
    with container.db.transaction() as conn:
        record_inbound(conn, container.clock, sms)


def status(container: Container, program: dict[str, Any]) -> Status:
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, PERSON)
        return consent.current(conn, contact["id"], program)[0] if contact else Status.NEVER


def count(container: Container, table: Any) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def opt_in(client: TestClient, occurred_at: str) -> Any:
    return client.post(
        f"/v1/contacts/{PERSON}/consent",
        json={"program": "deals", "action": "opt_in", "evidence": EVIDENCE, "occurred_at": occurred_at},
    )


def subscribed_then_stopped(container: Container, client: TestClient, clock: FrozenClock) -> None:
    assert opt_in(client, "2026-11-20T10:00:00Z").status_code == 201
    clock.advance(minutes=1)
    text(container, "STOP", "SMstop")  # at 2026-11-26T19:01Z


def test_the_api_cannot_resubscribe_someone_who_texted_stop(
    container: Container, client: TestClient, clock: FrozenClock, program: dict[str, Any]
) -> None:
    subscribed_then_stopped(container, client, clock)
    assert status(container, program) is Status.UNSUBSCRIBED
    events = count(container, consent_events)
    before = opt_in(client, "2026-11-25T10:00:00Z")  # consent dated before the STOP
    assert before.status_code == 422 and "before the person's last opt-out" in before.json()["detail"]
    future = opt_in(client, "2099-01-01T00:00:00Z")
    assert future.status_code == 422 and "in the future" in future.json()["detail"]
    clock.advance(hours=2)
    after = opt_in(client, "2026-11-26T20:00:00Z")  # a consent the caller says came after the STOP
    assert after.status_code == 409, after.text
    detail = after.json()["detail"]
    assert (
        detail.startswith("not subscribed: the person opted out") and "/v1/programs/deals/signups" in detail
    )
    assert status(container, program) is Status.UNSUBSCRIBED and count(container, consent_events) == events
    # Their own START does bring them back; then an opt-in dated before their STOP is still refused.
    text(container, "START", "SMstart")
    assert status(container, program) is Status.SUBSCRIBED
    stale = opt_in(client, "2026-11-25T10:00:00Z")
    assert stale.status_code == 422 and "before the person's last opt-out" in stale.json()["detail"]


def test_an_api_opt_in_for_someone_new_is_checked_for_time_too(
    client: TestClient, program: dict[str, Any]
) -> None:
    assert opt_in(client, "2099-01-01T00:00:00Z").status_code == 422
    ok = opt_in(client, "2026-11-26T19:03:00Z")  # three minutes ahead of our clock: skew is tolerated
    assert ok.status_code == 201 and ok.json()["statuses"] == {"deals": "subscribed"}


def test_an_api_signup_right_after_a_stop_texts_nobody(
    container: Container, client: TestClient, clock: FrozenClock, program: dict[str, Any]
) -> None:
    subscribed_then_stopped(container, client, clock)
    sent_before = count(container, messages)
    clock.advance(minutes=3)
    refused = client.post(
        "/v1/programs/deals/signups", json={**SIGNUP, "occurred_at": clock.now().isoformat()}
    )
    assert refused.status_code == 409, refused.text
    assert "opted out 3 minute(s) ago" in refused.json()["detail"] and "not sent" in refused.json()["detail"]
    assert count(container, messages) == sent_before and count(container, signups) == 0
    dated_before = client.post(
        "/v1/programs/deals/signups", json={**SIGNUP, "occurred_at": "2026-11-20T10:00:00Z"}
    )
    assert (
        dated_before.status_code == 422
        and "before the person's last opt-out" in dated_before.json()["detail"]
    )
    # Later, a sign-up may ask them: it texts the disclosure and waits for their own YES.
    clock.advance(minutes=30)
    started = client.post(
        "/v1/programs/deals/signups", json={**SIGNUP, "occurred_at": clock.now().isoformat()}
    )
    assert started.status_code == 201 and started.json()["outcome"] == "pending"
    assert status(container, program) is Status.PENDING
    text(container, "YES", "SMyes")
    assert status(container, program) is Status.SUBSCRIBED


def test_an_import_holds_opted_out_rows_with_the_reason(
    container: Container, client: TestClient, clock: FrozenClock, program: dict[str, Any], tmp_path: Path
) -> None:
    subscribed_then_stopped(container, client, clock)
    path = tmp_path / "crm.csv"
    path.write_text(
        "phone,name,consented_at,consent_source\n4155550134,Ann,2026-11-26,crm\n"
        "4155550135,Bob,2026-11-01,crm\n",
        encoding="utf-8",
    )
    summary = import_file(container.db, container.clock, path, program)
    assert (summary.consent_recorded, summary.kept_opted_out, summary.rejected) == (1, 1, 0)
    assert list(summary.held_reasons) == [
        "the person opted out; an opt-in through import cannot bring them back"
    ]
    with (tmp_path / "crm.rejects.csv").open(encoding="utf-8") as f:
        held = list(csv.reader(f))[1:]
    assert [row[0] for row in held] == ["2"] and held[0][2:] == ["4155550134", "Ann", "2026-11-26", "crm"]
    assert held[0][1].startswith("contact imported, consent not recorded: the person opted out")
    assert status(container, program) is Status.UNSUBSCRIBED


def test_the_dashboard_import_shows_why_consent_was_not_recorded(
    container: Container, client: TestClient, clock: FrozenClock, program: dict[str, Any]
) -> None:
    subscribed_then_stopped(container, client, clock)
    with container.db.transaction() as conn:
        users.create(conn, clock, "maria", "correct-horse-battery")
    web = TestClient(create_app(container))
    csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/login").text).group(1)  # type: ignore[union-attr]
    web.post("/login", data={"username": "maria", "password": "correct-horse-battery", "csrf": csrf})
    page = web.get("/dashboard/programs").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = b"phone,consented_at,consent_source\n(415) 555-0134,2026-11-26,kiosk\n"
    r = web.post(
        f"/dashboard/programs/{program['id']}/import",
        data={"csrf": csrf},
        files={"file": ("list.csv", body, "text/csv")},
    )
    assert r.status_code == 200, r.text
    shown = html.unescape(r.text)
    assert (
        "consent not recorded: the person opted out; an opt-in through import cannot bring them back" in shown
    )
    assert re.search(r"<dt>Consent recorded \(opt-in events\)</dt><dd>0</dd>", r.text)
    assert status(container, program) is Status.UNSUBSCRIBED


def test_the_join_form_right_after_a_stop_texts_nobody(
    container: Container, client: TestClient, clock: FrozenClock, program: dict[str, Any]
) -> None:
    subscribed_then_stopped(container, client, clock)
    sent_before = count(container, messages)
    web = TestClient(create_app(container))
    token = re.search(r'name="token" value="([^"]+)"', web.get("/join/deals").text).group(1)  # type: ignore[union-attr]
    r = web.post("/join/deals", data={"phone": "(415) 555-0134", "consent": "yes", "token": token})
    assert r.status_code == 400 and "a sign-up started now would text them" in html.unescape(r.text)
    assert count(container, messages) == sent_before and count(container, signups) == 0
    assert status(container, program) is Status.UNSUBSCRIBED
