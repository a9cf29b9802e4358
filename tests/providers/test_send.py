"""Each provider's sender against a local server speaking that provider's send API (no database)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, Sender
from optline.adapters.providers.plivo.send import PlivoSender
from optline.adapters.providers.telnyx.send import TelnyxSender
from optline.adapters.providers.twilio.send import TwilioSender
from optline.adapters.providers.vonage.send import VonageSender
from tests.support import fake_providers as fp

SMS = OutboundSms(to="+14155550134", from_="+14155550100", body="Acme: hi. Reply STOP to opt out.",
                  idempotency_key="c1:42", status_callback_url="https://acme.test/webhooks/x/status")  # fmt: skip
SECRETS = {
    "twilio": fp.TWILIO_TOKEN,
    "vonage": fp.VONAGE_SECRET,
    "plivo": fp.PLIVO_TOKEN,
    "telnyx": fp.TELNYX_KEY,
}


def build(name: str, url: str, *, wrong_secret: bool = False) -> Sender:
    secret = "wrong-secret-value" if wrong_secret else SECRETS[name]
    if name == "twilio":
        return TwilioSender(fp.TWILIO_SID, secret, url)
    if name == "vonage":
        return VonageSender(fp.VONAGE_KEY, secret, url)
    if name == "plivo":
        return PlivoSender(fp.PLIVO_ID, secret, url)
    return TelnyxSender(secret, url)


def wire_to(name: str) -> str:  # Vonage and Plivo take numbers without the plus
    return SMS.to.lstrip("+") if name in ("vonage", "plivo") else SMS.to


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders() as server:
        yield server


PROVIDERS = ["twilio", "vonage", "plivo", "telnyx"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_send_and_find(fake: fp.FakeProviders, name: str) -> None:
    sender = build(name, fake.url)
    result = sender.send(SMS)
    assert [(m["provider"], m["to"], m["body"]) for m in fake.received] == [(name, wire_to(name), SMS.body)]
    assert result.provider_message_id == fake.received[0]["sid"]
    found = sender.find_sent(SMS, datetime.now(UTC))
    # Telnyx: the Idempotency-Key makes a resend the reconciliation (it never sends twice).
    assert found == (None if name == "telnyx" else result.provider_message_id)


def test_telnyx_idempotency_key_prevents_a_second_send(fake: fp.FakeProviders) -> None:
    sender = build("telnyx", fake.url)
    first, second = sender.send(SMS), sender.send(SMS)
    assert first.provider_message_id == second.provider_message_id and len(fake.received) == 1


FAILURES: list[tuple[str, dict[str, Any], ErrorKind, str | None]] = [
    ("twilio", {"status": 500, "body": {"code": 20500, "message": "x"}}, ErrorKind.RETRY, "20500"),
    ("twilio", {"status": 400, "body": {"code": 21211, "message": "invalid To"}}, ErrorKind.BAD_REQUEST, "21211"),
    ("twilio", {"status": 400, "body": {"code": 21610, "message": "unsubscribed"}}, ErrorKind.OPTED_OUT, "21610"),
    ("vonage", {"status": 200, "body": {"messages": [{"status": "1", "error-text": "Throttled"}]}}, ErrorKind.RETRY, "1"),
    ("vonage", {"status": 200, "body": {"messages": [{"status": "6", "error-text": "Invalid"}]}}, ErrorKind.BAD_REQUEST, "6"),
    ("vonage", {"status": 200, "body": {"messages": [{"status": "9", "error-text": "x"}]}}, ErrorKind.OPTED_OUT, "9"),
    ("plivo", {"status": 503, "body": {"error": "down"}}, ErrorKind.RETRY, "503"),
    ("plivo", {"status": 400, "body": {"error": "invalid dst"}}, ErrorKind.BAD_REQUEST, "400"),
    ("telnyx", {"status": 400, "body": {"errors": [{"code": "40300", "title": "STOP"}]}}, ErrorKind.OPTED_OUT, "40300"),
    ("telnyx", {"status": 422, "body": {"errors": [{"code": "40310", "title": "bad"}]}}, ErrorKind.BAD_REQUEST, "40310"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rule", "kind", "code"), FAILURES)
def test_error_mapping(
    fake: fp.FakeProviders, name: str, rule: dict[str, Any], kind: ErrorKind, code: str | None
) -> None:
    fake.fail(provider=name, **rule)
    with pytest.raises(ProviderError) as info:
        build(name, fake.url).send(SMS)
    assert (info.value.kind, info.value.code) == (kind, code)


@pytest.mark.parametrize("name", PROVIDERS)
def test_rate_limited_with_retry_after(fake: fp.FakeProviders, name: str) -> None:
    fake.fail(provider=name, status=429, body={}, retry_after=12)
    with pytest.raises(ProviderError) as info:
        build(name, fake.url).send(SMS)
    assert info.value.kind is ErrorKind.RETRY and info.value.retry_after == 12


@pytest.mark.parametrize("name", PROVIDERS)
def test_bad_credentials_are_config_errors_and_never_echo_secrets(fake: fp.FakeProviders, name: str) -> None:
    with pytest.raises(ProviderError) as info:
        build(name, fake.url, wrong_secret=True).send(SMS)
    assert info.value.kind is ErrorKind.BAD_CONFIG
    assert "wrong-secret-value" not in str(info.value) and "wrong-secret-value" not in info.value.message


@pytest.mark.parametrize("name", PROVIDERS)
def test_timeout_is_transient(fake: fp.FakeProviders, name: str) -> None:
    fake.fail(provider=name, drop=True)
    with pytest.raises(ProviderError) as info:
        build(name, fake.url).send(SMS)
    assert info.value.kind is ErrorKind.RETRY


def test_opted_out_numbers_at_the_carrier(fake: fp.FakeProviders) -> None:
    for name in PROVIDERS:
        fake.state.opted_out.add(wire_to(name))
        with pytest.raises(ProviderError) as info:
            build(name, fake.url).send(SMS)
        assert info.value.kind is ErrorKind.OPTED_OUT, name
