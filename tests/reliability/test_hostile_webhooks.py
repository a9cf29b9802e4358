"""Hostile input at every provider webhook (issue 13): thousands of hypothesis-generated requests, signed with
the providers' own SDKs and unsigned, driven through the ASGI app in-process.

- never a 5xx: a 5xx makes the provider retry the same request forever;
- unsigned → 403 (415 or 400 only when the body is not in the provider's format, refused before it is read);
- signed but unusable → 4xx naming what is wrong;
- nothing recorded for any refused request (inbound messages, consent events, kept receipts, contacts).

The unsigned half touches no database, so it runs once (SQLite); the signed half runs on both engines.
``FUZZ_EXAMPLES`` (environment, default 150) bounds the examples per provider, kind and half.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import func, select

from optline.adapters.db.tables import consent_events, contacts, inbound_messages, pending_receipts
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from tests.support import hostile, signing, web

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
KINDS = ("sms", "status")
# What a refusal names: the field, the body (not UTF-8 / not JSON / too large), the Content-Type, the query.
NAMES_WHAT = re.compile(r"field|body|payload|data\.|Content-Type|query|event_type|signature")
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url=hostile.BASE, **signing.SETTINGS)


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    """The app, with a program owning SENDER and PERSON subscribed to it (so a STOP has a real effect)."""
    prog = web.program(container)  # sender_numbers: [hostile.SENDER]
    web.subscriber(container, prog, hostile.PERSON)
    with TestClient(create_app(container), raise_server_exceptions=False) as c:
        yield c


def recorded(container: Container) -> tuple[int, ...]:
    with container.db.read() as conn:
        return tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (inbound_messages, consent_events, pending_receipts, contacts)
        )


def send(client: TestClient, container: Container, req: hostile.Hostile) -> Any:
    method, path, headers, body = hostile.prepare(req, container.clock.now().timestamp())
    return client.request(method, path, headers=headers, content=body)


def _explain(req: hostile.Hostile, response: Any) -> str:
    return f"{req.provider} {req.path} {req.content_type!r} {req.note} {req.body[:300]!r} -> " + (
        f"{response.status_code} {response.text[:300]}"
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("provider", hostile.PROVIDERS)
@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
def test_unsigned_requests_are_refused_and_record_nothing(
    client: TestClient, container: Container, provider: str, kind: str
) -> None:
    before = recorded(container)

    @FUZZ
    @given(req=hostile.requests(provider, kind, signed=False))
    def check(req: hostile.Hostile) -> None:
        response = send(client, container, req)
        if req.well_formed:
            assert response.status_code == 403, _explain(req, response)
        else:
            assert response.status_code in (400, 403, 415), _explain(req, response)
        assert recorded(container) == before, _explain(req, response)

    check()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("provider", hostile.PROVIDERS)
def test_signed_hostile_requests_never_get_a_5xx_and_refusals_record_nothing(
    client: TestClient, container: Container, provider: str, kind: str
) -> None:
    @FUZZ
    @given(req=hostile.requests(provider, kind, signed=True))
    def check(req: hostile.Hostile) -> None:
        before = recorded(container)
        response = send(client, container, req)
        assert response.status_code < 500, _explain(req, response)
        if response.status_code >= 400:
            # 403 only where the signature cannot cover the request as it is read (a body in another format).
            refusals = (400, 413, 415, 422) if req.well_formed else (400, 403, 413, 415, 422)
            assert response.status_code in refusals, _explain(req, response)
            assert NAMES_WHAT.search(response.text), _explain(req, response)  # says what is wrong, and where
            assert recorded(container) == before, _explain(req, response)
        else:
            assert response.status_code == 200, _explain(req, response)

    check()


@pytest.mark.parametrize("provider", hostile.PROVIDERS)
def test_a_stop_with_nul_characters_is_recorded_without_them(
    client: TestClient, container: Container, provider: str
) -> None:
    """PostgreSQL cannot store NUL in text: the STOP used to fail there with a 500 on every retry, so the
    opt-out was never recorded. NUL is removed from the text before it is stored; the opt-out stands."""
    fx = hostile.inbound(provider, "SMnul00001", body="\x00ST\x00OP\x00")
    signed = signing.sign(provider, fx, hostile.BASE, now=container.clock.now().timestamp())
    response = client.request(signed.method, signed.path, headers=signed.headers, content=signed.body)
    assert response.status_code == 200, response.text
    with container.db.read() as conn:
        body, intent, event_id = conn.execute(
            select(inbound_messages.c.body, inbound_messages.c.intent, inbound_messages.c.consent_event_id)
        ).one()
        action = conn.execute(select(consent_events.c.action).where(consent_events.c.id == event_id)).scalar()
    assert (body, intent, action) == ("STOP", "optout", "opt_out")


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("provider", "field", "value", "named"),
    [
        ("twilio", "MessageSid", "SM" + "9" * 200, "MessageSid"),
        ("twilio", "From", "+1415555\x000134", "From"),
        ("plivo", "MessageUUID", "\x00", "MessageUUID"),
        ("vonage", "msisdn", "1" * 40, "msisdn"),
    ],
)
def test_a_signed_but_unusable_field_is_a_400_naming_it(
    client: TestClient, container: Container, provider: str, field: str, value: str, named: str
) -> None:
    fx = hostile.inbound(provider, "SMfield001")
    fx["params"][field] = value
    signed = signing.sign(provider, fx, hostile.BASE, now=container.clock.now().timestamp())
    before = recorded(container)
    response = client.request(signed.method, signed.path, headers=signed.headers, content=signed.body)
    assert response.status_code == 400 and named in response.text, response.text
    assert recorded(container) == before
