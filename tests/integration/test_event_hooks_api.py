"""/v1/webhook-endpoints and /v1/webhook-deliveries over HTTP, on both engines: authenticated, clear errors,
the secret returned once, deliveries listed with their attempts, replay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from optline.adapters.db import api_keys
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.entrypoints.api.app import create_app
from optline.services import consent
from tests.support import web


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    with TestClient(create_app(container), headers={"authorization": f"Bearer {key}"}) as c:
        yield c


def test_endpoints_need_an_api_key(container: Container) -> None:
    with TestClient(create_app(container)) as anonymous:
        assert anonymous.get("/v1/webhook-endpoints").status_code == 401
        assert anonymous.post("/v1/webhook-deliveries/1/replay").status_code == 401


def test_register_list_deliveries_replay_and_disable(container: Container, client: TestClient) -> None:
    created = client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://crm.example.com/optline", "events": ["opt_out"], "description": "CRM"},
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["opt_out"]
    listed = client.get("/v1/webhook-endpoints").json()
    assert [e["url"] for e in listed] == ["https://crm.example.com/optline"]
    assert "secret" not in listed[0]  # shown once

    program = web.program(container)
    person = web.subscriber(container, program)
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=person["id"],
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.API,
            evidence={"source": "test"},
        )
    (delivery,) = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()
    assert delivery["event_type"] == "opt_out" and delivery["status"] == "pending"
    assert delivery["message_id"].startswith("msg_") and delivery["attempt_list"] == []

    assert client.post(f"/v1/webhook-deliveries/{delivery['id']}/replay").status_code == 202
    missing = client.post("/v1/webhook-deliveries/999/replay")
    assert missing.status_code == 404 and "no webhook delivery 999" in missing.text
    assert client.get("/v1/webhook-endpoints/999/deliveries").status_code == 404

    assert client.delete(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert client.get("/v1/webhook-endpoints").json()[0]["enabled"] is False
    again = client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert again.status_code == 404 and f"no enabled webhook endpoint {endpoint['id']}" in again.text
    _rejoin_and_leave(container, program, person)  # while disabled: nothing is queued for it
    enabled = client.post(f"/v1/webhook-endpoints/{endpoint['id']}/enable")
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    assert enabled.json()["disabled_at"] is None
    twice = client.post(f"/v1/webhook-endpoints/{endpoint['id']}/enable")
    assert twice.status_code == 404 and f"no disabled webhook endpoint {endpoint['id']}" in twice.text
    _rejoin_and_leave(container, program, person)
    types = [d["event_type"] for d in client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()]
    assert types == ["opt_out", "opt_out"]  # the first one and the one after re-enabling, none in between


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/webhook-endpoints/{id}/enable"),
        ("DELETE", "/v1/webhook-endpoints/{id}"),
        ("GET", "/v1/webhook-endpoints/{id}/deliveries"),
        ("POST", "/v1/webhook-deliveries/{id}/replay"),
    ],
)
def test_an_id_no_database_can_hold_is_a_422_naming_it(client: TestClient, method: str, path: str) -> None:
    """The API fuzzer found enable answering 500 (PostgreSQL: bigint out of range) for an id past BIGINT."""
    response = client.request(method, path.format(id=2**63))
    assert response.status_code == 422, response.text
    assert "less than or equal to 9223372036854775807" in response.text


def _rejoin_and_leave(container: Container, program: dict, person: dict) -> None:
    """The person texts START, then STOP again: one opt_out event for the endpoint's subscription."""
    for action, channel, evidence in (
        (Action.OPT_IN, Channel.SMS_KEYWORD, {"message_text": "START"}),
        (Action.OPT_OUT, Channel.API, {"source": "test"}),
    ):
        with container.db.transaction() as conn:
            consent.record(
                conn,
                container.clock,
                contact_id=person["id"],
                program=program,
                action=action,
                channel=channel,
                evidence=evidence,
            )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"url": "http://crm.example.com/x", "events": ["opt_out"]}, "uses plain http"),
        (
            {"url": "https://crm.example.com/x", "events": ["opt_out", "deliverd"]},
            "unknown event type(s) deliverd",
        ),
        ({"url": "https://crm.example.com/x", "events": []}, "at least one"),
    ],
)
def test_bad_endpoints_are_refused_naming_what_is_wrong(client: TestClient, body: dict, why: str) -> None:
    response = client.post("/v1/webhook-endpoints", json=body)
    assert response.status_code == 422 and why in response.json()["detail"]
    assert client.get("/v1/webhook-endpoints").json() == []
