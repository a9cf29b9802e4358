"""A signed webhook cannot carry unsigned content: each provider's body is read only in the format the
provider sends and only after its signature is checked over those very bytes (invariant 6), on both engines.
Requests are signed with the providers' own SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.db.tables import consent_events, inbound_messages
from optline.adapters.providers.webhook_request import WebhookRequest
from optline.bootstrap import Container
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.entrypoints.api.app import create_app
from optline.services import consent
from tests.support import signing, web

PERSON, SENDER = "+14155550134", "+14155550100"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


@pytest.fixture
def opted_out(container: Container) -> dict[str, Any]:
    """The person subscribed to "deals" and then texted STOP."""
    prog = web.program(container)
    contact = web.subscriber(container, prog, PERSON)
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=contact["id"],
            program=prog,
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"text": "STOP"},
        )
    return contact


def recorded(container: Container) -> tuple[int, int]:
    with container.db.read() as conn:
        inbound = conn.execute(select(func.count()).select_from(inbound_messages)).scalar_one()
        events = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
    return int(inbound), int(events)


def _plivo_query_signed(path: str, params: dict[str, str], nonce: str) -> tuple[str, dict[str, str]]:
    """A Plivo callback that carries its parameters in the URL (as with message_method GET), signed by the
    Plivo SDK: the signature covers the URL and nothing else."""
    from plivo.utils.signature_v3 import construct_get_url, get_signature_v3

    url = f"http://testserver{path}?{urlencode(params)}"
    sig = get_signature_v3(signing.PLIVO_TOKEN.encode(), construct_get_url(url, {}), nonce.encode()).decode()
    return url, {"x-plivo-signature-v3": sig, "x-plivo-signature-v3-nonce": nonce}


def test_plivo_signature_over_the_url_does_not_cover_a_json_body(
    client: TestClient, container: Container, opted_out: dict[str, Any]
) -> None:
    captured = {"From": "14155550199", "To": "14155550100", "Text": "hi", "Type": "sms", "MessageUUID": "m-1"}
    url, headers = _plivo_query_signed("/webhooks/plivo/sms", captured, "nonce-1")
    forged = {"From": PERSON.lstrip("+"), "To": SENDER.lstrip("+"), "Text": "START", "MessageUUID": "m-2"}
    before = recorded(container)
    response = client.post(
        url.removeprefix("http://testserver"),
        content=json.dumps(forged).encode(),
        headers={**headers, "content-type": "application/json"},
    )
    assert response.status_code == 415, response.text
    assert "application/x-www-form-urlencoded" in response.text
    assert recorded(container) == before


def test_plivo_signed_form_with_its_body_swapped_for_json_is_refused(
    client: TestClient, container: Container, opted_out: dict[str, Any]
) -> None:
    fx = signing.inbound_fixture("plivo", sid="m-3", from_=PERSON, to=SENDER, body="hello")
    signed = signing.sign("plivo", fx, "http://testserver")
    body = json.dumps({**fx["params"], "Text": "START"}).encode()
    before = recorded(container)
    response = client.post(
        signed.path, content=body, headers={**signed.headers, "content-type": "application/json"}
    )
    assert response.status_code in (403, 415)
    assert recorded(container) == before


@pytest.mark.parametrize(
    ("provider", "content_type"),
    [
        ("twilio", "text/plain"),
        ("plivo", "text/plain"),
        ("telnyx", "application/x-www-form-urlencoded"),
        ("simulator", "application/x-www-form-urlencoded"),
        ("vonage", "text/plain"),
    ],
)
def test_a_body_type_the_provider_never_sends_is_refused_unread(
    client: TestClient, container: Container, provider: str, content_type: str
) -> None:
    fx = signing.inbound_fixture(provider, sid="m-4", from_=PERSON, to=SENDER, body="START")
    signed = signing.sign(provider, fx, "http://testserver", now=container.clock.now().timestamp())
    response = client.request(
        signed.method,
        signed.path,
        content=signed.body,
        headers={**signed.headers, "content-type": content_type},
    )
    assert response.status_code == 415, response.text
    assert "is not" in response.text
    assert recorded(container) == (0, 0)


def test_telnyx_body_is_not_parsed_before_the_signature_is_checked(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    original = WebhookRequest.json

    def spy(self: WebhookRequest) -> Any:
        parsed.append(self.body)
        return original(self)

    monkeypatch.setattr(WebhookRequest, "json", spy)
    fx = signing.inbound_fixture("telnyx", sid="t-1", from_=PERSON, to=SENDER, body="START")
    signed = signing.sign("telnyx", fx, "http://testserver", now=container.clock.now().timestamp())
    headers = {**signed.headers, "telnyx-signature-ed25519": signed.headers["telnyx-signature-ed25519"][::-1]}
    response = client.post(signed.path, content=signed.body, headers=headers)
    assert response.status_code == 403
    assert parsed == []
    assert recorded(container) == (0, 0)
