"""/v1/reports over HTTP (FastAPI's test client, a real app over the test database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from optline.adapters.db import api_keys, contacts
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.entrypoints.api.app import create_app
from optline.services import consent
from optline.services.programs import create_program
from tests.support import outbox_rows as rows

T = datetime(2026, 11, 20, tzinfo=UTC)


def test_reports_need_a_key_and_answer(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "test", clock.now())
        deals = create_program(
            conn, clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )
        camp = rows.campaign(conn, deals, "spring", T)
        for i in range(20):
            person = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0]
            rows.message(conn, program=deals, contact=person, at=T, campaign=camp)
            if i < 3:
                consent.record(
                    conn,
                    clock,
                    contact_id=person["id"],
                    program=deals,
                    action=Action.OPT_OUT,
                    channel=Channel.WEB,
                    evidence={},
                    occurred_at=T + timedelta(hours=1),
                )
    client = TestClient(create_app(container))
    assert client.get("/v1/reports/optouts").status_code == 401
    auth = {"Authorization": f"Bearer {key}"}
    body = client.get("/v1/reports/optouts", headers=auth, params={"program": "deals"}).json()
    assert body["totals"]["optouts"] == 3 and body["totals"]["sent"] == 20
    (campaign,) = body["campaigns"]
    assert campaign["key"] == "spring" and campaign["rate_delivered"] == 0.15 and campaign["flagged"]
    assert {r["key"]: r["optouts"] for r in body["by_channel"]}["web_link"] == 3
    assert client.get("/v1/reports/optouts", headers=auth, params={"program": "nope"}).status_code == 404
    assert client.get("/v1/reports/optouts", headers=auth, params={"since": "yesterday"}).status_code == 422

    assert client.get("/v1/reports/audit/latest", headers=auth).status_code == 404
    made = client.post("/v1/reports/audit", headers=auth)
    assert made.status_code == 201 and made.json()["trigger"] == "api"
    latest = client.get("/v1/reports/audit/latest", headers=auth).json()
    assert latest["id"] == made.json()["id"]
