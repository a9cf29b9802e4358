"""The /v1 API through FastAPI's TestClient, on both engines."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from optline.adapters.db import api_keys
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app


@pytest.fixture
def client(container: Container) -> TestClient:
    return TestClient(create_app(container))


@pytest.fixture
def auth(container: Container) -> dict[str, str]:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    return {"Authorization": f"Bearer {key}"}


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer olk_000000000000_wrong"])
def test_v1_needs_a_valid_key(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/v1/programs", headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["detail"]


def test_program_contact_consent_flow(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post(
        "/v1/programs",
        json={"help_contact": "help@acme.example", "name": "deals", "brand": "Acme"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert "Reply STOP" in r.json()["help_text"]
    assert (
        client.post(
            "/v1/programs",
            json={"help_contact": "help@acme.example", "name": "deals", "brand": "Acme"},
            headers=auth,
        ).status_code
        == 409
    )

    r = client.post(
        "/v1/contacts", json={"phone": "(415) 555-0134", "attributes": {"tier": "gold"}}, headers=auth
    )
    assert r.status_code == 201 and r.json()["phone"] == "+14155550134"
    bad = client.post("/v1/contacts", json={"phone": "12"}, headers=auth)
    assert bad.status_code == 422 and "phone" in bad.json()["detail"]

    refused = client.post(
        "/v1/contacts/+14155550134/consent",
        json={"program": "deals", "action": "opt_in", "occurred_at": "2026-11-20T10:00:00Z"},
        headers=auth,
    )
    assert refused.status_code == 422 and "source" in refused.json()["detail"]

    evidence = {"source": "checkout page", "disclosure_text": "Acme deals, 4 msgs/mo. Reply STOP to opt out."}
    untimed = client.post(
        "/v1/contacts/4155550134/consent",
        json={"program": "deals", "action": "opt_in", "evidence": evidence},
        headers=auth,
    )
    assert untimed.status_code == 422 and "occurred_at" in untimed.json()["detail"]
    ok = client.post(
        "/v1/contacts/4155550134/consent",
        json={
            "program": "deals",
            "action": "opt_in",
            "evidence": evidence,
            "occurred_at": "2026-11-20T10:00:00Z",
        },
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["statuses"] == {"deals": "subscribed"}

    out = client.post(
        "/v1/contacts/4155550134/consent", json={"program": "deals", "action": "opt_out"}, headers=auth
    )
    assert out.json()["statuses"] == {"deals": "unsubscribed"}

    shown = client.get("/v1/contacts/415.555.0134", headers=auth).json()
    assert [e["action"] for e in shown["history"]] == ["opt_in", "opt_out"]
    assert shown["history"][0]["evidence"]["api_key"] == "tests"
    assert shown["subscriptions"][0]["status"] == "unsubscribed"
    assert client.get("/v1/contacts/4155550199", headers=auth).status_code == 404


def test_unknown_program_is_404(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post(
        "/v1/contacts/4155550134/consent", json={"program": "nope", "action": "opt_out"}, headers=auth
    )
    assert r.status_code == 404 and "nope" in r.json()["detail"]
