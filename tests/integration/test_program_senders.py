"""Sender numbers typed in common formats (issue 12, item 2), on SQLite and PostgreSQL.

A program's sender is stored in one form (E.164, or a short code's digits) by the service every entry point
uses, so a STOP sent to ``+14155550100`` finds the program created with ``--sender "(415) 555-0100"``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db import api_keys
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import programs
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.entrypoints.api.app import create_app
from optline.services import consent, users
from optline.services.inbound import record_inbound
from optline.services.programs import create_program

PERSON = "+14155550134"
WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/j",
}


def stored_senders(container: Container, name: str) -> tuple[list[str], str | None]:
    with container.db.read() as conn:
        row = conn.execute(select(programs).where(programs.c.name == name)).one()
    return list(row.sender_numbers), row.short_code


def subscribe(container: Container, *names_programs: dict[str, Any]) -> dict[str, Any]:
    with container.db.transaction() as conn:
        person, _ = contact_repo.get_or_create(conn, parse_phone(PERSON), container.clock.now())
        for program in names_programs:
            consent.record(
                conn,
                container.clock,
                contact_id=person["id"],
                program=program,
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
    return person


def test_the_service_stores_senders_in_one_form(container: Container) -> None:
    with container.db.transaction() as conn:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            short_code=" 87654 ",
            sender_numbers=["(415) 555-0100", "+1 415 555 0100", "415.555.0101", "12345"],
        )
    assert stored_senders(container, "deals") == (["+14155550100", "+14155550101", "12345"], "87654")


@pytest.mark.parametrize(
    ("field", "value"), [("sender_numbers", ["hello"]), ("sender_numbers", ["123"]), ("short_code", "12")]
)
def test_the_service_refuses_what_is_not_a_sender_naming_it(
    container: Container, field: str, value: Any
) -> None:
    with container.db.transaction() as conn, pytest.raises(InvalidPhoneNumber) as raised:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            **{field: value},
        )
    bad = value[0] if isinstance(value, list) else value
    assert repr(bad) in str(raised.value)
    with container.db.read() as conn:
        assert conn.execute(select(programs)).first() is None


@pytest.mark.parametrize("to", ["+14155550100", "14155550100"])  # Twilio/Telnyx/simulator; Vonage/Plivo
def test_stop_to_the_e164_form_opts_out_of_the_program_created_with_a_typed_number(
    container: Container, to: str
) -> None:
    with container.db.transaction() as conn:
        deals = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
            sender_numbers=["(415) 555-0100"],
        )
        news = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme",
            optout_scope="program",
            sender_numbers=["415-555-0101"],
        )
    person = subscribe(container, deals, news)
    sms = InboundSms(
        provider="twilio", provider_message_id="SM1", from_phone=PERSON, to_phone=to, body="STOP"
    )
    with container.db.transaction() as conn:
        result = record_inbound(conn, container.clock, sms)
    assert result.program_id == deals["id"]
    with container.db.read() as conn:
        assert consent.current(conn, person["id"], deals)[0] is Status.UNSUBSCRIBED
        assert consent.current(conn, person["id"], news)[0] is Status.SUBSCRIBED  # program scope: only deals


def test_a_sender_stored_before_normalisation_still_matches(container: Container) -> None:
    with container.db.transaction() as conn:
        deals = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme",
            optout_scope="program",
        )
        conn.execute(
            programs.update().where(programs.c.id == deals["id"]).values(sender_numbers=["(415) 555-0100"])
        )
    person = subscribe(container, deals)
    sms = InboundSms(
        provider="twilio", provider_message_id="SM1", from_phone=PERSON, to_phone="+14155550100", body="STOP"
    )
    with container.db.transaction() as conn:
        assert record_inbound(conn, container.clock, sms).program_id == deals["id"]
        assert consent.current(conn, person["id"], deals)[0] is Status.UNSUBSCRIBED


def test_the_api_normalises_senders_and_refuses_bad_ones(container: Container) -> None:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    client = TestClient(create_app(container))
    auth = {"Authorization": f"Bearer {key}"}
    ok = client.post(
        "/v1/programs",
        json={
            "help_contact": "help@acme.example",
            "name": "deals",
            "brand": "Acme",
            "sender_numbers": ["(415) 555-0100"],
        },
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["sender_numbers"] == ["+14155550100"]
    for bad in ("hello", "123"):
        refused = client.post(
            "/v1/programs",
            json={
                "help_contact": "help@acme.example",
                "name": f"x{bad}",
                "brand": "Acme",
                "sender_numbers": [bad],
            },
            headers=auth,
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"].startswith(f"sender {bad!r} is neither a phone number")
    short = client.post(
        "/v1/programs",
        json={"help_contact": "help@acme.example", "name": "sc", "brand": "Acme", "short_code": "ABCDE"},
        headers=auth,
    )
    assert short.status_code == 422 and "'ABCDE'" in short.json()["detail"]
    assert [p["name"] for p in client.get("/v1/programs", headers=auth).json()] == ["deals"]


def test_the_dashboard_form_uses_the_same_rule(container: Container) -> None:
    with container.db.transaction() as conn:
        users.create(conn, container.clock, "maria", "correct-horse-battery")
    web = TestClient(create_app(container))
    csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/login").text).group(1)  # type: ignore[union-attr]
    web.post("/login", data={"username": "maria", "password": "correct-horse-battery", "csrf": csrf})
    csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/dashboard/programs").text).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "brand": "Acme", "scope": "program", "help_contact": "help@acme.example"}
    bad = web.post("/dashboard/programs", data={**form, "name": "x", "sender": "hello"})
    assert bad.status_code == 400 and "sender 'hello' is neither a phone number" in html.unescape(bad.text)
    ok = web.post(
        "/dashboard/programs",
        data={**form, "name": "deals", "sender": "(415) 555-0100"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert stored_senders(container, "deals") == (["+14155550100"], None)
