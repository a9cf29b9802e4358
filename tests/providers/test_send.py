"""Each provider's sender against a local server speaking that provider's REST API as documented (no
database): sending, error mapping, and reconciliation against lists that page, filter and lag."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, Sender, SendResult
from optline.adapters.providers.plivo.send import PlivoSender
from optline.adapters.providers.telnyx.send import TelnyxSender
from optline.adapters.providers.twilio.send import TwilioSender
from optline.adapters.providers.vonage.send import VonageSender
from tests.support import fake_providers as fp

SMS = OutboundSms(
    to="+14155550134",
    from_="+14155550100",
    body="Acme: hi. Reply STOP to opt out.",
    idempotency_key="c1:42",
    status_callback_url="https://acme.test/webhooks/x/status",
)
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


def send(sender: Sender, sms: OutboundSms) -> SendResult:
    return http_errors.run(lambda http: sender.send(http, sms))


def find_sent(sender: Sender, sms: OutboundSms, since: datetime) -> str | None:
    return http_errors.run(lambda http: sender.find_sent(http, sms, since))


def wire_to(name: str) -> str:  # Vonage and Plivo take numbers without the plus
    return SMS.to.lstrip("+") if name in ("vonage", "plivo") else SMS.to


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


PROVIDERS = ["twilio", "vonage", "plivo", "telnyx"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_send_and_find(fake: fp.FakeProviders, name: str) -> None:
    sender = build(name, fake.url)
    before = datetime.now(UTC)
    result = send(sender, SMS)
    assert [(m["provider"], m["to"], m["body"]) for m in fake.received] == [(name, wire_to(name), SMS.body)]
    assert result.provider_message_id == fake.received[0]["sid"]
    found = find_sent(sender, SMS, before)
    # Telnyx: the Idempotency-Key makes a resend the reconciliation (it never sends twice).
    assert found == (None if name == "telnyx" else result.provider_message_id)


def test_telnyx_idempotency_key_prevents_a_second_send(fake: fp.FakeProviders) -> None:
    sender = build("telnyx", fake.url)
    first, second = send(sender, SMS), send(sender, SMS)
    assert first.provider_message_id == second.provider_message_id and len(fake.received) == 1


def _twilio(status: int, code: int) -> dict[str, Any]:  # https://www.twilio.com/docs/usage/twilios-response
    return {
        "status": status,
        "body": {
            "code": code,
            "message": f"error {code}",
            "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
        },
    }


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
        send(build(name, fake.url), SMS)
    assert (info.value.kind, info.value.code) == (kind, code)


@pytest.mark.parametrize("name", PROVIDERS)
def test_rate_limited_with_retry_after(fake: fp.FakeProviders, name: str) -> None:
    fake.fail(provider=name, status=429, body={}, retry_after=12)
    with pytest.raises(ProviderError) as info:
        send(build(name, fake.url), SMS)
    assert info.value.kind is ErrorKind.RETRY and info.value.retry_after == 12


@pytest.mark.parametrize("name", PROVIDERS)
def test_bad_credentials_are_config_errors_and_never_echo_secrets(fake: fp.FakeProviders, name: str) -> None:
    with pytest.raises(ProviderError) as info:
        send(build(name, fake.url, wrong_secret=True), SMS)
    assert info.value.kind is ErrorKind.BAD_CONFIG
    assert "wrong-secret-value" not in str(info.value) and "wrong-secret-value" not in info.value.message


@pytest.mark.parametrize("name", PROVIDERS)
def test_timeout_is_transient(fake: fp.FakeProviders, name: str) -> None:
    fake.fail(provider=name, drop=True)
    with pytest.raises(ProviderError) as info:
        send(build(name, fake.url), SMS)
    assert info.value.kind is ErrorKind.RETRY


@pytest.mark.parametrize("name", ["twilio", "telnyx"])
def test_providers_that_refuse_an_opted_out_number_at_send_time(fake: fp.FakeProviders, name: str) -> None:
    fake.state.opted_out.add(wire_to(name))
    with pytest.raises(ProviderError) as info:
        send(build(name, fake.url), SMS)
    assert info.value.kind is ErrorKind.OPTED_OUT


@pytest.mark.parametrize(("name", "code"), [("vonage", "9"), ("plivo", "200")])
def test_providers_that_report_an_opted_out_number_in_the_receipt(
    fake: fp.FakeProviders, name: str, code: str
) -> None:
    fake.state.opted_out.add(wire_to(name))
    result = send(build(name, fake.url), SMS)  # accepted: the refusal comes back as a receipt
    [receipt] = fake.receipts
    params = receipt["params"]
    assert params.get("messageId", params.get("MessageUUID")) == result.provider_message_id
    assert params.get("err-code", params.get("ErrorCode")) == code


def test_vonage_out_of_credit_is_a_configuration_error_not_an_opt_out(fake: fp.FakeProviders) -> None:
    fake.state.out_of_credit.add("vonage")
    with pytest.raises(ProviderError) as info:
        send(build("vonage", fake.url), SMS)
    assert (info.value.kind, info.value.code) == (ErrorKind.BAD_CONFIG, "9")
    assert "credit" in info.value.message and fake.received == []


# -- reconciliation against lists that behave like the providers' ----------------------------------------


def _others(fake: fp.FakeProviders, name: str, n: int, to: str | None = None) -> None:
    """``n`` other messages already accepted: to the same recipient with other bodies (Twilio, Vonage), or to
    other recipients (Plivo, whose list cannot be filtered by recipient)."""
    for i in range(n):
        recipient = to or f"1415666{i:04d}"  # never SMS.to
        fake.state.record(
            name, recipient, wire_to(name).replace(SMS.to.lstrip("+"), "14155550100"), f"other {i}"
        )


def test_twilio_list_pages_and_a_queued_message_is_found(fake: fp.FakeProviders) -> None:
    fake.state.settle = 3600.0  # accepted, but Twilio has not sent it: status queued, date_sent null
    sender = build("twilio", fake.url)
    before = datetime.now(UTC) - timedelta(minutes=5)
    result = send(sender, SMS)
    for i in range(250):  # newer messages to the same person: the one we look for is on the third page
        fake.state.record("twilio", SMS.to, "+14155550100", f"later {i}")
    assert find_sent(sender, SMS, before) == result.provider_message_id


def test_twilio_date_filter_hides_queued_messages(fake: fp.FakeProviders) -> None:
    """The fake follows the documented filter: a DateSent filter matches only messages with a date_sent."""
    fake.state.settle = 3600.0
    send(build("twilio", fake.url), SMS)
    url = f"{fake.url}/2010-04-01/Accounts/{fp.TWILIO_SID}/Messages.json"
    auth = (fp.TWILIO_SID, fp.TWILIO_TOKEN)
    day = datetime.now(UTC).date().isoformat()
    listed = httpx.get(url, params={"To": SMS.to, "DateSent>": day}, auth=auth).json()
    assert listed["messages"] == []
    [queued] = httpx.get(url, params={"To": SMS.to}, auth=auth).json()["messages"]
    assert (queued["status"], queued["date_sent"]) == ("queued", None)
    fake.state.settle = 0.0  # now sent: date_sent set, listed under the filter
    [sent] = httpx.get(url, params={"To": SMS.to, "DateSent>": day}, auth=auth).json()["messages"]
    assert sent["status"] == "delivered" and sent["date_sent"]


def test_twilio_page_size_and_next_page_uri(fake: fp.FakeProviders) -> None:
    # Nothing is sent while the test pages: a message that becomes sent between two pages moves in the
    # DateSent order (as on Twilio), and a loaded machine can take longer than ``settle`` over five pages.
    fake.state.settle = 3600.0
    _others(fake, "twilio", 5, to=SMS.to)
    url = f"{fake.url}/2010-04-01/Accounts/{fp.TWILIO_SID}/Messages.json"
    auth = (fp.TWILIO_SID, fp.TWILIO_TOKEN)
    sids, page = [], httpx.get(url, params={"To": SMS.to, "PageSize": 2}, auth=auth).json()
    while True:
        assert len(page["messages"]) <= 2
        sids += [m["sid"] for m in page["messages"]]
        if not page["next_page_uri"]:
            break
        assert "To=" in page["next_page_uri"] and "PageToken=" in page["next_page_uri"]
        page = httpx.get(fake.url + page["next_page_uri"], auth=auth).json()
    assert len(sids) == len(set(sids)) == 5


def test_twilio_same_body_sent_before_the_hand_over_is_not_this_message(fake: fp.FakeProviders) -> None:
    sender = build("twilio", fake.url)
    send(sender, SMS)  # yesterday's identical text, say
    assert find_sent(sender, SMS, datetime.now(UTC) + timedelta(minutes=1)) is None


def test_plivo_list_honours_limit_and_reconciliation_follows_meta_next(fake: fp.FakeProviders) -> None:
    sender = build("plivo", fake.url)
    before = datetime.now(UTC)
    result = send(sender, SMS)
    _others(fake, "plivo", 45)  # newer, to other people: ours is on the third page of 20
    page = httpx.get(
        f"{fake.url}/v1/Account/{fp.PLIVO_ID}/Message/",
        params={"limit": 50},
        auth=(fp.PLIVO_ID, fp.PLIVO_TOKEN),
    )
    assert page.status_code == 400  # limit is 1..20
    page = httpx.get(
        f"{fake.url}/v1/Account/{fp.PLIVO_ID}/Message/",
        params={"limit": 20},
        auth=(fp.PLIVO_ID, fp.PLIVO_TOKEN),
    ).json()
    assert (
        len(page["objects"]) == 20
        and page["meta"]["total_count"] == 46
        and "offset=20" in page["meta"]["next"]
    )
    assert find_sent(sender, SMS, before) == result.provider_message_id


@pytest.mark.parametrize("name", ["twilio", "vonage", "plivo"])
def test_a_message_that_shows_up_late_is_found_after_reconcile_after(
    fake: fp.FakeProviders, name: str
) -> None:
    """A lost answer: the provider accepted the message, but its list shows it only ``list_lag`` later.
    Looking at once finds nothing (a resend would be a duplicate); after ``reconcile_after`` it is there."""
    # A lag far longer than a loaded machine takes between the send and the first look (0.5 s was not).
    fake.state.list_lag = 20.0
    sender = build(name, fake.url)
    assert sender.reconcile_after > fake.state.list_lag  # the adapter's wait covers the lag
    fake.fail(provider=name, accept=True, drop=True)
    before = datetime.now(UTC)
    with pytest.raises(ProviderError) as info:
        send(sender, SMS)
    assert info.value.kind is ErrorKind.RETRY and info.value.outcome_unknown
    assert find_sent(sender, SMS, before) is None  # too early
    fake.state.list_lag = 0.0  # the lag has passed (instead of waiting it out)
    assert find_sent(sender, SMS, before) == fake.received[0]["sid"]


def test_outcome_unknown_makes_dispatch_wait_reconcile_after(fake: fp.FakeProviders) -> None:
    from optline.adapters.providers.base import reconcile_delay

    sender = build("twilio", fake.url)
    fake.fail(provider="twilio", status=500, body={"code": 20500, "message": "Internal Server Error"})
    with pytest.raises(ProviderError) as info:
        send(sender, SMS)
    assert info.value.outcome_unknown and reconcile_delay(sender, info.value) == sender.reconcile_after
    fake.fail(provider="twilio", status=429, body={}, retry_after=3)
    with pytest.raises(ProviderError) as info:
        send(sender, SMS)  # refused: nothing to reconcile, only the provider's Retry-After
    assert not info.value.outcome_unknown and reconcile_delay(sender, info.value) == 0


# -- Telnyx's Idempotency-Key: the same request replays, another body is refused ---------------------------


def test_telnyx_key_with_a_different_body_is_refused_not_replayed(fake: fp.FakeProviders) -> None:
    sender = build("telnyx", fake.url)
    send(sender, SMS)
    changed = OutboundSms(
        SMS.to, SMS.from_, SMS.body + " (edited)", SMS.idempotency_key, SMS.status_callback_url
    )
    with pytest.raises(ProviderError) as info:
        send(sender, changed)
    assert info.value.kind is ErrorKind.BAD_REQUEST and "422" in info.value.message
    assert [m["body"] for m in fake.received] == [SMS.body]  # nothing sent twice, nothing replayed


def test_telnyx_replays_only_successful_answers(fake: fp.FakeProviders) -> None:
    sender = build("telnyx", fake.url)
    fake.fail(
        provider="telnyx", status=500, body={"errors": [{"code": "10007", "title": "Unexpected error"}]}
    )
    with pytest.raises(ProviderError):
        send(sender, SMS)
    result = send(sender, SMS)  # the failed attempt left no record under the key: this one is sent
    assert [m["sid"] for m in fake.received] == [result.provider_message_id]


def test_telnyx_lost_answer_then_resend_with_the_key_is_one_message(fake: fp.FakeProviders) -> None:
    sender = build("telnyx", fake.url)
    fake.fail(provider="telnyx", accept=True, drop=True)
    with pytest.raises(ProviderError):
        send(sender, SMS)
    result = send(sender, SMS)
    assert [m["sid"] for m in fake.received] == [result.provider_message_id]


# -- Vonage: status 9 is the account's credit; an opted-out recipient comes back in a receipt -------------


def test_vonage_status_9_is_configuration_and_opt_out_is_a_receipt(fake: fp.FakeProviders) -> None:
    sender = build("vonage", fake.url)
    fake.state.opted_out.add(wire_to("vonage"))
    result = send(sender, SMS)  # opted out: accepted (status 0), never status 9
    [receipt] = fake.receipts
    assert (receipt["params"]["messageId"], receipt["params"]["err-code"]) == (
        result.provider_message_id,
        "9",
    )
    fake.state.out_of_credit.add("vonage")
    with pytest.raises(ProviderError) as info:
        send(sender, SMS)
    assert (info.value.kind, info.value.code) == (ErrorKind.BAD_CONFIG, "9")


# -- 429 with Retry-After, as each provider answers it ---------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
def test_provider_rate_limit_answer_carries_retry_after(fake: fp.FakeProviders, name: str) -> None:
    fake.fail(provider=name, rate_limited=True, retry_after=7)
    with pytest.raises(ProviderError) as info:
        send(build(name, fake.url), SMS)
    assert (info.value.kind, info.value.retry_after) == (ErrorKind.RETRY, 7)
    assert not info.value.outcome_unknown and fake.received == []


def test_latency_is_applied_to_provider_calls() -> None:
    with fp.FakeProviders(latency=(0.1, 0.3)) as fake:
        sender = build("twilio", fake.url)
        started = time.perf_counter()
        send(sender, SMS)
        assert time.perf_counter() - started >= 0.1  # a lower bound: sleeping is never faster


@pytest.mark.parametrize("name", ["twilio", "plivo"])
def test_reconciliation_that_cannot_finish_says_so_instead_of_guessing_not_sent(
    fake: fp.FakeProviders, name: str
) -> None:
    """More candidates than the adapter reads (its MAX_PAGES): "not found" would be a guess that sends a
    duplicate, so it answers retry-later instead."""
    from optline.adapters.providers.plivo import send as plivo
    from optline.adapters.providers.twilio import send as twilio

    module = twilio if name == "twilio" else plivo
    before = datetime.now(UTC)
    _others(fake, name, module.PAGE_SIZE * module.MAX_PAGES + 1, to=SMS.to if name == "twilio" else None)
    with pytest.raises(ProviderError) as info:
        find_sent(build(name, fake.url), SMS, before)
    assert (info.value.kind, info.value.code) == (ErrorKind.RETRY, "reconcile")


def test_outcome_unknown_survives_the_courier_pipe(fake: fp.FakeProviders) -> None:
    """The courier process pickles a call's ProviderError back to its worker (services/courier.py)."""
    import pickle

    fake.fail(provider="twilio", drop=True)
    with pytest.raises(ProviderError) as info:
        send(build("twilio", fake.url), SMS)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.kind, copy.code, copy.outcome_unknown) == (ErrorKind.RETRY, info.value.code, True)
