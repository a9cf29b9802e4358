"""What dispatch makes of each provider's documented answers, on both engines (issue 12 item 11): a
configuration error (bad credentials, Vonage out of credit) opts nobody out and does not burn through the
queue; an opted-out recipient becomes a ledger event whether the provider says so at send time (Twilio,
Telnyx) or in the receipt (Vonage, Plivo)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db.tables import campaigns as campaigns_table
from optline.adapters.db.tables import consent_events, messages, subscriptions
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services.dispatch import DispatchConfig, Dispatcher
from tests.integration.test_dispatch import drain, start_campaign
from tests.providers.test_send import build
from tests.support import fake_providers as fp
from tests.support import outbound, signing


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def dispatcher(
    container: Container, fake: fp.FakeProviders, name: str, concurrency: int = 16, **kw: Any
) -> Dispatcher:
    return Dispatcher(
        container.db,
        container.clock,
        build(name, fake.url, **kw),
        DispatchConfig(public_url="https://acme.test", concurrency=concurrency),
        worker_id="w1",
    )


def opt_outs(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return list(conn.execute(select(consent_events).where(consent_events.c.action == "opt_out")))


def no_credit(fake: fp.FakeProviders) -> None:
    fake.state.out_of_credit.add("vonage")


# (provider, how the account is broken): every one a configuration error, about nobody's consent.
CONFIG_ERRORS: list[tuple[str, str, Callable[[fp.FakeProviders], None] | None]] = [
    ("twilio", "20003", None),  # wrong auth token: HTTP 401, code 20003
    ("vonage", "4", None),  # wrong secret: status 4 "Invalid Credentials"
    ("vonage", "9", no_credit),  # out of credit: status 9 "Partner Quota Violation"
    ("plivo", "401", None),  # wrong auth token: HTTP 401
    ("telnyx", "10009", None),  # wrong API key: HTTP 401, code 10009
]


@pytest.mark.parametrize(
    ("name", "code", "breakage"), CONFIG_ERRORS, ids=[f"{n}-{c}" for n, c, _ in CONFIG_ERRORS]
)
def test_a_configuration_error_opts_nobody_out_and_holds_the_batch_back(
    container: Container,
    fake: fp.FakeProviders,
    name: str,
    code: str,
    breakage: Callable[[fp.FakeProviders], None] | None,
) -> None:
    outbound.seed(container, 3)
    start_campaign(container)
    if breakage is not None:
        breakage(fake)
    # One call at a time, so that "held back" is deterministic.
    counts = drain(dispatcher(container, fake, name, concurrency=1, wrong_secret=breakage is None))
    assert counts.sent == 0 and counts.suppressed == 0 and counts.retried == 3
    assert opt_outs(container) == []
    with container.db.read() as conn:
        rows = list(conn.execute(select(messages)))
        subs = {r.status for r in conn.execute(select(subscriptions.c.status))}
        paused = conn.execute(select(campaigns_table.c.status, campaigns_table.c.pause_reason)).one()
    assert subs == {"subscribed"}
    # The campaign waits for the operator (paused, with the reason), its messages queued without having
    # spent an attempt; nothing failed.
    assert paused.status == "paused" and f"configuration error ({code})" in paused.pause_reason
    assert all(r.status == "queued" and r.attempts == 0 and r.error_code == code for r in rows)
    assert all("configuration error" in r.reason for r in rows)
    # One call found the account broken; the others were held back, not sent to fail the same way.
    assert sum(r.reason.startswith("held back") for r in rows) == 2


# Where each provider reports an opted-out recipient (its documentation, tests/support/fake_providers.py).
@pytest.mark.parametrize(
    ("name", "at_send"), [("twilio", True), ("telnyx", True), ("vonage", False), ("plivo", False)]
)
def test_an_opted_out_recipient_becomes_a_ledger_event_wherever_the_provider_says_so(
    container: Container, fake: fp.FakeProviders, name: str, at_send: bool
) -> None:
    _program, ids = outbound.seed(container, 2)
    opted_out = outbound.phone(0)
    fake.state.opted_out.add(opted_out.lstrip("+") if name in ("vonage", "plivo") else opted_out)
    start_campaign(container)
    counts = drain(dispatcher(container, fake, name))
    assert (counts.sent, counts.suppressed) == ((1, 1) if at_send else (2, 0))
    with TestClient(create_app(container)) as client:
        for receipt in fake.receipts:
            s = signing.sign(name, receipt, "http://testserver", now=container.clock.now().timestamp())
            assert client.request(s.method, s.path, headers=s.headers, content=s.body).status_code == 200
    [event] = opt_outs(container)
    assert event.contact_id == ids[0] and event.channel == "provider"
    with container.db.read() as conn:
        row = conn.execute(select(messages).where(messages.c.contact_id == ids[0])).one()
    assert row.status == ("suppressed" if at_send else "failed")


def test_a_telnyx_stop_reported_in_the_finalized_callback_becomes_a_ledger_event(
    container: Container, fake: fp.FakeProviders
) -> None:
    """Telnyx reports 40300 at send time for a number already blocked, and in ``message.finalized`` for one
    blocked after the message was accepted (tests/support/fake_providers.py): both are opt-outs."""
    _program, ids = outbound.seed(container, 2)
    fake.state.blocked_later.add(outbound.phone(0))
    start_campaign(container)
    assert drain(dispatcher(container, fake, "telnyx")).sent == 2  # both accepted
    [receipt] = fake.receipts
    with TestClient(create_app(container)) as client:
        s = signing.sign("telnyx", receipt, "http://testserver", now=container.clock.now().timestamp())
        assert client.request(s.method, s.path, headers=s.headers, content=s.body).status_code == 200
    [event] = opt_outs(container)
    assert event.contact_id == ids[0] and event.channel == "provider"
    with container.db.read() as conn:
        row = conn.execute(select(messages).where(messages.c.contact_id == ids[0])).one()
    assert (row.status, row.error_code) == ("undelivered", "40300")  # Telnyx delivery_failed
