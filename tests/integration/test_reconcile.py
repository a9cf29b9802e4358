"""Reconciliation through dispatch, on both engines, against fakes that behave like the providers: a
message accepted but not yet sent (Twilio: queued, no DateSent) is found, not sent again; a retry after an
unknown outcome and a reclaim after a crash both wait the provider's ``reconcile_after``; Telnyx's resend
with the same Idempotency-Key is one message."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from optline import bootstrap
from optline.adapters.db.tables import messages
from optline.adapters.providers.base import Sender
from optline.adapters.providers.telnyx.send import TelnyxSender
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.config import Settings
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher
from tests.integration.test_dispatch import drain, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound

LEASE = timedelta(seconds=60)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    # Accepted messages stay queued (Twilio sends them "later"): the case a DateSent filter would hide.
    with fp.FakeProviders(latency=0, settle=3600) as server:  # not a latency test
        yield server


def dispatcher(container: Container, sender: Sender, worker: str = "w1") -> Dispatcher:
    config = DispatchConfig(public_url="https://acme.test", lease=LEASE)
    return Dispatcher(container.db, container.clock, sender, config, worker_id=worker)


def twilio(fake: fp.FakeProviders) -> TwilioSender:
    return TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)


def the_row(container: Container) -> Any:
    with container.db.read() as conn:
        return conn.execute(select(messages)).one()


def test_a_lost_answer_is_reconciled_with_a_queued_message_after_reconcile_after(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    fake.fail(accept=True, drop=True)  # Twilio accepted it (queued, no date_sent); the answer is lost
    sender = twilio(fake)
    assert drain(dispatcher(container, sender)).retried == 1
    container.clock.advance(seconds=sender.reconcile_after - 1)
    assert drain(dispatcher(container, sender)).claimed == 0  # too early to look
    container.clock.advance(seconds=2)
    assert drain(dispatcher(container, sender)).sent == 1
    [arrival] = fake.received
    row = the_row(container)
    assert row.provider_message_id == arrival["sid"] and row.status == "sent"


def test_a_crashed_hand_over_is_reclaimed_only_after_reconcile_after(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    sender = twilio(fake)
    crashed = dispatcher(container, sender, "crashed")
    with container.db.transaction() as conn:
        claimed = crashed.claim(conn, container.clock.now(), 10)
    with container.db.transaction() as conn:
        [item] = crashed.check(conn, claimed, Counts())
    crashed.deliver(item)  # the provider accepted it, then the worker died before recording
    other = dispatcher(container, sender)
    container.clock.advance(seconds=LEASE.total_seconds() + 1)
    assert drain(other).claimed == 0  # the lease alone has run out, but the list may not show it yet
    container.clock.advance(seconds=sender.reconcile_after)
    assert drain(other).sent == 1
    assert len(fake.received) == 1 and the_row(container).provider_message_id == fake.received[0]["sid"]


def test_telnyx_resend_with_the_same_key_after_a_lost_answer_is_one_message(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 1)
    start_campaign(container)
    fake.fail(provider="telnyx", accept=True, drop=True)
    sender = TelnyxSender(fp.TELNYX_KEY, fake.url)
    assert sender.reconcile_after == 0  # the resend is the reconciliation
    assert drain(dispatcher(container, sender)).retried == 1
    container.clock.advance(seconds=5)
    assert drain(dispatcher(container, sender)).sent == 1
    [arrival] = fake.received
    assert the_row(container).provider_message_id == arrival["sid"]


# -- OPTLINE_RECONCILE_AFTER_SECONDS: from the settings, through bootstrap, to the retry and the lease ------

PROVIDER_SETTINGS: dict[str, dict[str, Any]] = {
    "twilio": {"twilio_account_sid": fp.TWILIO_SID, "twilio_auth_token": fp.TWILIO_TOKEN},
    "plivo": {"plivo_auth_id": fp.PLIVO_ID, "plivo_auth_token": fp.PLIVO_TOKEN},
    "vonage": {"vonage_api_key": fp.VONAGE_KEY, "vonage_api_secret": fp.VONAGE_SECRET},
    "telnyx": {"telnyx_api_key": fp.TELNYX_KEY},
}


def sender_for(container: Container, provider: str, base_url: str, **extra: Any) -> Sender:
    """The sender bootstrap builds for these settings (the worker's own path: bootstrap.sender)."""
    values = {**PROVIDER_SETTINGS[provider], f"{provider}_base_url": base_url}
    settings = Settings(
        env="test", database_url=container.settings.database_url, provider=provider, **values, **extra
    )
    built = Container(settings=settings, db=container.db, clock=container.clock)
    return cast(Sender, bootstrap.sender(built))


@pytest.mark.parametrize(
    ("provider", "default"), [("twilio", 30.0), ("plivo", 60.0), ("vonage", 300.0), ("telnyx", 0.0)]
)
def test_reconcile_after_defaults_per_provider_and_the_setting_overrides(
    container: Container, provider: str, default: float
) -> None:
    assert sender_for(container, provider, "http://127.0.0.1:9").reconcile_after == default
    overridden = sender_for(container, provider, "http://127.0.0.1:9", reconcile_after_seconds=7.5)
    assert overridden.reconcile_after == 7.5


def test_reconcile_after_is_validated_and_a_value_below_vonages_documented_delay_warned(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Settings(env="test", reconcile_after_seconds=-1)
    with caplog.at_level(logging.WARNING, logger="optline.providers"):
        sender_for(container, "vonage", "http://127.0.0.1:9", reconcile_after_seconds=60)
    assert "below 300.0 s" in caplog.text and "a few minutes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="optline.providers"):
        sender_for(container, "twilio", "http://127.0.0.1:9", reconcile_after_seconds=1)
    assert caplog.text == ""  # no documented delay to hold it to


def test_the_setting_times_the_retry_after_a_lost_answer_and_the_reclaim_after_a_crash(
    container: Container, fake: fp.FakeProviders
) -> None:
    sender = sender_for(container, "twilio", fake.url, reconcile_after_seconds=7)
    assert sender.reconcile_after == 7
    outbound.seed(container, 2)
    start_campaign(container)
    crashed = dispatcher(container, sender, "crashed")
    with container.db.transaction() as conn:
        first = crashed.claim(conn, container.clock.now(), 1)
    with container.db.transaction() as conn:
        [item] = crashed.check(conn, first, Counts())
    crashed.deliver(item)  # message 1 handed over, then the worker died before recording
    # Message 2: the answer is lost; the retry waits the configured 7 s (not Twilio's default 30 s).
    fake.fail(accept=True, drop=True)
    assert drain(dispatcher(container, sender)).retried == 1
    container.clock.advance(seconds=6)
    assert drain(dispatcher(container, sender)).claimed == 0  # too early to look
    container.clock.advance(seconds=2)
    assert drain(dispatcher(container, sender)).sent == 1  # message 2, reconciled after 7 s
    # Message 1's hand-over is reclaimed after the lease plus the configured 7 s, not plus 30 s.
    container.clock.advance(seconds=LEASE.total_seconds() - 8 + 1)  # the lease alone has run out
    assert drain(dispatcher(container, sender)).claimed == 0
    container.clock.advance(seconds=7)  # lease + 8 s: past lease + 7, well before lease + 30
    assert drain(dispatcher(container, sender)).sent == 1
    with container.db.read() as conn:
        assert {r.status for r in conn.execute(select(messages))} == {"sent"}
    assert len(fake.received) == 2  # each accepted once, neither sent twice
