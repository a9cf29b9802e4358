"""/v1/campaigns on both engines: API key required; create, lint, audience, send, status, pause, cancel."""

from __future__ import annotations

from fastapi.testclient import TestClient

from optline.adapters.db import api_keys
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
