"""The simulator is a development tool: its webhooks and the dashboard's "reply as a contact" exist only when
the simulator is the configured provider (invariant 6). With a real provider, nobody can record a START
"from" a person through them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.db.tables import consent_events, inbound_messages
from optline.adapters.providers.simulator import webhook as simulator
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import users
from tests.support import signing, web

PASSWORD = "correct-horse-battery"


def _app(db_url: str, clock: Any, provider: str) -> tuple[Container, TestClient]:
    settings = Settings(
        env="test", database_url=db_url, public_url="http://testserver", provider=provider, **signing.SETTINGS
    )
    container = build(settings, clock=clock)
    return container, TestClient(create_app(container))


def _recorded(container: Container) -> tuple[int, int]:
    with container.db.read() as conn:
        inbound = conn.execute(select(func.count()).select_from(inbound_messages)).scalar_one()
        events = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
    return int(inbound), int(events)


def _login(client: TestClient, container: Container) -> str:
    with container.db.transaction() as conn:
        users.create(conn, container.clock, "maria", PASSWORD)
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    r = client.post("/login", data={"username": "maria", "password": PASSWORD, "csrf": csrf.group(1)})
    assert r.status_code == 200, r.text
    found = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert found
    return found.group(1)


@pytest.mark.parametrize("provider", ["twilio", "simulator"])
def test_simulator_webhooks_exist_only_with_the_simulator_provider(
    db_url: str, clock: Any, provider: str
) -> None:
    container, client = _app(db_url, clock, provider)
    try:
        prog = web.program(container)
        person = web.subscriber(container, prog)
        before = _recorded(container)
        body, headers = simulator.encode(
            {"sid": "SM1", "from": person["phone"], "to": "+14155550100", "body": "STOP"}, signing.SECRET_KEY
        )
        r = client.post("/webhooks/simulator/sms", content=body, headers=headers)
        if provider == "simulator":
            assert r.status_code == 200, r.text
            assert _recorded(container) != before
        else:
            assert r.status_code == 404
            assert _recorded(container) == before
    finally:
        container.close()


@pytest.mark.parametrize("provider", ["twilio", "simulator"])
def test_reply_as_a_contact_exists_only_with_the_simulator_provider(
    db_url: str, clock: Any, provider: str
) -> None:
    container, client = _app(db_url, clock, provider)
    try:
        prog = web.program(container)
        person = web.subscriber(container, prog)
        csrf = _login(client, container)
        before = _recorded(container)
        page = client.get("/dashboard/simulator")
        r = client.post(
            "/dashboard/simulator/reply",
            data={"csrf": csrf, "from": person["phone"], "to": "+14155550100", "body": "STOP"},
        )
        overview = client.get("/dashboard").text
        if provider == "simulator":
            assert page.status_code == 200 and r.status_code == 200, r.text
            assert _recorded(container) != before
            assert 'href="/dashboard/simulator"' in overview
        else:
            assert page.status_code == 404 and r.status_code == 404
            assert _recorded(container) == before
            assert 'href="/dashboard/simulator"' not in overview  # no menu entry to a page that is not there
    finally:
        container.close()


def test_the_inbound_path_refuses_simulator_requests_with_a_real_provider(db_url: str, clock: Any) -> None:
    """`optline inbound simulate` and anything else that calls the inbound path directly: refused too."""
    from optline.adapters.providers.webhook_request import SignatureError, WebhookRequest
    from optline.entrypoints.api.webhooks import handle_inbound

    container, _ = _app(db_url, clock, "plivo")
    try:
        body, headers = simulator.encode(
            {"sid": "SM2", "from": "+14155550134", "to": "+14155550100", "body": "START"}, signing.SECRET_KEY
        )
        req = WebhookRequest(
            method="POST", url="http://testserver/webhooks/simulator/sms", headers=headers, body=body
        )
        with pytest.raises(SignatureError, match="OPTLINE_PROVIDER"):
            handle_inbound(container, "simulator", req)
        assert _recorded(container) == (0, 0)
    finally:
        container.close()
