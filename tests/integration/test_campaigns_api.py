"""/v1/campaigns on both engines: API key required; create, lint, audience, send, status, pause, cancel."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import update

from optline.adapters.db import api_keys
from optline.adapters.db.tables import campaigns
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from tests.support import outbound


def test_campaigns_api(container: Container) -> None:
    outbound.seed(container, 3)
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "test", container.clock.now())
    client = TestClient(create_app(container))
    body = {"program": "deals", "name": "bf", "template": "Hi {{ first_name }}, deals at bit.ly/x"}
    assert client.post("/v1/campaigns", json=body).status_code == 401
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post("/v1/campaigns", json=body, headers=auth)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    lint = client.post(f"/v1/campaigns/{cid}/lint", headers=auth).json()
    assert not lint["ok"] and {f["code"] for f in lint["findings"]} >= {"link_shortener", "missing_optout"}
    refused = client.post(f"/v1/campaigns/{cid}/send", headers=auth)
    assert refused.status_code == 409 and "bit.ly" in refused.json()["detail"]

    body = {**body, "name": "ok", "template": "Hi {{ first_name }}"}
    cid = client.post("/v1/campaigns", json=body, headers=auth).json()["id"]
    assert client.get(f"/v1/campaigns/{cid}/audience", headers=auth).json()["recipients"] == 3
    sent = client.post(f"/v1/campaigns/{cid}/send", headers=auth)
    assert sent.status_code == 200 and sent.json()["status"] == "sending"
    assert client.get(f"/v1/campaigns/{cid}/status", headers=auth).json()["counts"] == {"queued": 3}
    assert client.post(f"/v1/campaigns/{cid}/pause", headers=auth).json()["status"] == "paused"
    assert client.post(f"/v1/campaigns/{cid}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.get(f"/v1/campaigns/{cid}/status", headers=auth).json()["counts"] == {"cancelled": 3}
    assert client.get("/v1/campaigns/999", headers=auth).status_code == 404
    assert len(client.get("/v1/campaigns?program=deals", headers=auth).json()) == 2


def test_unknown_filter_key_is_a_422_naming_the_known_keys(container: Container) -> None:
    outbound.seed(container, 2, attributes=lambda i: {"first_name": f"P{i}", "color": "red"})
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "test", container.clock.now())
    client = TestClient(create_app(container))
    auth = {"Authorization": f"Bearer {key}"}
    body = {
        "program": "deals",
        "name": "reds",
        "template": "Hi {{ first_name }}",
        "audience_filter": {"colour": "red"},
    }
    refused = client.post("/v1/campaigns", json=body, headers=auth)
    assert refused.status_code == 422
    assert "'colour'" in refused.json()["detail"] and "color" in refused.json()["detail"]

    cid = client.post(
        "/v1/campaigns", json={**body, "audience_filter": {"color": "red"}}, headers=auth
    ).json()["id"]
    assert client.get(f"/v1/campaigns/{cid}/audience", headers=auth).json()["recipients"] == 2
    with container.db.transaction() as conn:  # a stored filter whose key no contact has any more
        conn.execute(update(campaigns).where(campaigns.c.id == cid).values(audience_filter={"colour": "red"}))
    for response in (
        client.get(f"/v1/campaigns/{cid}/audience", headers=auth),
        client.post(f"/v1/campaigns/{cid}/send", headers=auth),
    ):
        assert response.status_code == 422, response.text
        assert "'colour'" in response.json()["detail"] and "first_name" in response.json()["detail"]
    assert client.get(f"/v1/campaigns/{cid}", headers=auth).json()["status"] == "draft"
