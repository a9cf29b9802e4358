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


def _twilio(status: int, code: int) -> dict[str, Any]:  # https://www.twilio.com/docs/usage/twilios-response
    return {"status": status, "body": {"code": code, "message": f"error {code}", "status": status,
                                       "more_info": f"https://www.twilio.com/docs/errors/{code}"}}  # fmt: skip


def _vonage(status: str, text: str) -> dict[str, Any]:  # HTTP 200 whatever the outcome
    return {
        "status": 200,
        "body": {"message-count": "1", "messages": [{"status": status, "error-text": text}]},
    }


def _telnyx(status: int, code: str, title: str) -> dict[str, Any]:
    return {"status": status, "body": {"errors": [{"code": code, "title": title, "detail": title}]}}


# What each provider answers (its documentation, cited in its send.py table) and what optline makes of it.
FAILURES: list[tuple[str, dict[str, Any], ErrorKind, str | None]] = [
    ("twilio", _twilio(500, 20500), ErrorKind.RETRY, "20500"),
    ("twilio", _twilio(400, 21211), ErrorKind.BAD_REQUEST, "21211"),
    ("twilio", _twilio(400, 21610), ErrorKind.OPTED_OUT, "21610"),
    ("twilio", _twilio(401, 20003), ErrorKind.BAD_CONFIG, "20003"),
    ("twilio", _twilio(400, 21606), ErrorKind.BAD_CONFIG, "21606"),
    ("twilio", _twilio(400, 21408), ErrorKind.BAD_CONFIG, "21408"),
    ("twilio", _twilio(429, 20429), ErrorKind.RETRY, "20429"),
    ("vonage", _vonage("1", "Throttled"), ErrorKind.RETRY, "1"),
    ("vonage", _vonage("4", "Bad Credentials"), ErrorKind.BAD_CONFIG, "4"),
    ("vonage", _vonage("6", "Invalid Message"), ErrorKind.BAD_REQUEST, "6"),
    ("vonage", _vonage("7", "Number Barred"), ErrorKind.BAD_REQUEST, "7"),
    # Status 9 in a send response is the account's credit, never the recipient's opt-out.
    ("vonage", _vonage("9", "Partner Quota Violation"), ErrorKind.BAD_CONFIG, "9"),
    ("vonage", _vonage("29", "Non White-listed Destination"), ErrorKind.BAD_CONFIG, "29"),
    ("plivo", {"status": 503, "body": {"error": "down"}}, ErrorKind.RETRY, "503"),
    ("plivo", {"status": 400, "body": {"error": "invalid dst"}}, ErrorKind.BAD_REQUEST, "400"),
    ("plivo", {"status": 400, "body": {"error": "Insufficient Credit"}}, ErrorKind.BAD_CONFIG, "900"),
    ("telnyx", _telnyx(409, "40300", "Blocked due to STOP message"), ErrorKind.OPTED_OUT, "40300"),
    ("telnyx", _telnyx(422, "40310", "bad"), ErrorKind.BAD_REQUEST, "40310"),
    ("telnyx", _telnyx(400, "40013", "Invalid source number"), ErrorKind.BAD_CONFIG, "40013"),
    ("telnyx", _telnyx(401, "10009", "Authentication failed"), ErrorKind.BAD_CONFIG, "10009"),
    ("telnyx", _telnyx(429, "10011", "Too many requests"), ErrorKind.RETRY, "10011"),
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


@pytest.mark.parametrize("name", ["twilio", "telnyx"])
def test_providers_that_refuse_an_opted_out_number_at_send_time(fake: fp.FakeProviders, name: str) -> None:
    fake.state.opted_out.add(wire_to(name))
    with pytest.raises(ProviderError) as info:
        build(name, fake.url).send(SMS)
    assert info.value.kind is ErrorKind.OPTED_OUT


@pytest.mark.parametrize(("name", "code"), [("vonage", "9"), ("plivo", "200")])
def test_providers_that_report_an_opted_out_number_in_the_receipt(
    fake: fp.FakeProviders, name: str, code: str
) -> None:
    fake.state.opted_out.add(wire_to(name))
    result = build(name, fake.url).send(SMS)  # accepted: the refusal comes back as a receipt
    [receipt] = fake.receipts
    params = receipt["params"]
    assert params.get("messageId", params.get("MessageUUID")) == result.provider_message_id
    assert params.get("err-code", params.get("ErrorCode")) == code


def test_vonage_out_of_credit_is_a_configuration_error_not_an_opt_out(fake: fp.FakeProviders) -> None:
    fake.state.out_of_credit.add("vonage")
    with pytest.raises(ProviderError) as info:
        build("vonage", fake.url).send(SMS)
    assert (info.value.kind, info.value.code) == (ErrorKind.BAD_CONFIG, "9")
    assert "credit" in info.value.message and fake.received == []
