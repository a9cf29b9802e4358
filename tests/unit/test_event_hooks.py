"""The outbound webhook rules: who may be an endpoint, which events exist, the signature, the backoff."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from optline.domain import event_hooks as rules


def test_signature_matches_the_specifications_published_example() -> None:
    # The example of the Standard Webhooks specification (and of its reference libraries' tests).
    sig = rules.signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_the_standardwebhooks_package() -> None:
    import time

    secret = rules.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == rules.SECRET_BYTES
    body = b'{"type":"opt_out","data":{"phone":"+14155550134"}}'
    headers = rules.headers(secret, rules.new_message_id(), int(time.time()), body)
    assert Webhook(secret).verify(body, headers)["type"] == "opt_out"
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body.replace(b"0134", b"0135"), headers)  # a changed body is refused


@pytest.mark.parametrize(
    "url",
    ["https://crm.example.com/hooks", "http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9000/x"],
)
def test_accepted_urls(url: str) -> None:
    assert rules.check_url(f"  {url} ", development=False) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://crm.example.com/hooks", "uses plain http"),
        ("ftp://crm.example.com/hooks", "must be an absolute https:// URL"),
        ("crm.example.com/hooks", "must be an absolute https:// URL"),
        ("https://user:pw@crm.example.com/", "must not carry a user name or password"),
        ("https://crm.example.com/" + "x" * 500, "longer than 500"),
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(rules.EndpointError, match=why):
        rules.check_url(url, development=False)


def test_plain_http_is_allowed_in_development() -> None:
    assert rules.check_url("http://crm.internal/hooks", development=True) == "http://crm.internal/hooks"


def test_events_are_checked_and_ordered() -> None:
    assert rules.parse_events(["review.needed", " opt_out", "opt_out"]) == ["opt_out", "review.needed"]
    with pytest.raises(rules.EndpointError, match=r"unknown event type.*opt-out"):
        rules.parse_events(["opt-out"])
    with pytest.raises(rules.EndpointError, match="at least one"):
        rules.parse_events([])


def test_backoff_doubles_up_to_three_hours() -> None:
    base = timedelta(seconds=30)
    assert [rules.retry_delay(n, base).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert rules.retry_delay(30, base) == rules.MAX_RETRY_DELAY
