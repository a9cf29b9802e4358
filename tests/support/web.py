"""Helpers for page tests: a signed-in operator, the form token and text of a page, a subscribed contact
with a message that carries an opt-out link."""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi.testclient import TestClient

from optline.adapters.clock import Clock
from optline.adapters.db import contacts as contact_repo
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.optout_links import new_token
from optline.domain.phones import parse_phone
from optline.entrypoints.api.app import create_app
from optline.services import consent, outbox, users
from optline.services import programs as program_service

PASSWORD = "correct-horse-battery"


def csrf(page: str) -> str:
    """The form token of a dashboard page."""
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def page_text(page: str) -> str:
    """What a person reads on the page: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def log_in(client: TestClient, username: str, password: str) -> int:
    login = client.get("/login")
    r = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": csrf(login.text)},
        follow_redirects=False,
    )
    return r.status_code


def signed_in(container: Container, username: str = "maria") -> TestClient:
    """The ASGI app with an operator signed in (a new user with ``PASSWORD``)."""
    with container.db.transaction() as conn:
        users.create(conn, container.clock, username, PASSWORD)
    client = TestClient(create_app(container))
    assert log_in(client, username, PASSWORD) == 303
    return client


def program(
    container: Container, name: str = "deals", brand: str = "Acme Coffee", **kw: Any
) -> dict[str, Any]:
    with container.db.transaction() as conn:
        return program_service.create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name=name,
            brand=brand,
            sender_numbers=["+14155550100"],
            **kw,
        )


def subscriber(container: Container, prog: dict[str, Any], phone: str = "+14155550134") -> dict[str, Any]:
    clock: Clock = container.clock
    with container.db.transaction() as conn:
        contact, _ = contact_repo.get_or_create(conn, parse_phone(phone, "US"), clock.now())
        consent.record(
            conn,
            clock,
            contact_id=contact["id"],
            program=prog,
            action=Action.OPT_IN,
            channel=Channel.API,
            evidence={"source": "test", "disclosure_text": "Reply STOP to opt out"},
        )
    return contact


def message_with_link(container: Container, prog: dict[str, Any], contact: dict[str, Any]) -> dict[str, Any]:
    token = new_token()
    with container.db.transaction() as conn:
        return outbox.enqueue(
            conn,
            container.clock,
            program_id=prog["id"],
            contact_id=contact["id"],
            to_phone=contact["phone"],
            kind=outbox.Kind.MARKETING,
            body=f"{prog['brand']}: 20% off today. Stop: http://testserver/u/{token}",
            idempotency_key=outbox.key("test", token),
            optout_token=token,
        )
