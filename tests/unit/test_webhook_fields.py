"""The rules for what a webhook may carry (adapters/providers/webhook_request.py): ids, numbers and codes are
short printable strings, or a 400 naming the field; a message's text loses only what cannot be stored."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optline.adapters.providers.webhook_request import (
    PHONE_LENGTH,
    PayloadError,
    checked,
    message_text,
    optional,
    parse_urlencoded,
    require,
)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("S" * 101, "longer than 100"),
        ("SM\x001", "control"),
        ("SM\n1", "control"),
        ("\ud800", "control"),
        ({"a": 1}, "not a string"),
        (True, "not a string"),
    ],
)
def test_an_unusable_id_is_refused_naming_the_field(value: object, problem: str) -> None:
    with pytest.raises(PayloadError, match=f"twilio webhook: field MessageSid .*{problem}"):
        checked(value, "MessageSid", provider="twilio")


def test_limits_and_missing_fields() -> None:
    assert checked("S" * 100, "MessageSid", provider="twilio") == "S" * 100
    assert checked(14155550134, "msisdn", provider="vonage", limit=PHONE_LENGTH) == "14155550134"
    with pytest.raises(PayloadError, match="field From is longer than 20"):
        require({"From": "+1" * 11}, "From", provider="twilio", limit=PHONE_LENGTH)
    with pytest.raises(PayloadError, match="missing field MessageSid / SmsSid"):
        require({"MessageSid": ""}, "MessageSid", "SmsSid", provider="twilio")
    assert optional({"ErrorCode": ""}, "ErrorCode", provider="twilio", limit=50) is None


def test_message_text_keeps_everything_storable() -> None:
    assert message_text("\x00ST\x00OP\x00") == "STOP"  # still an opt-out
    assert message_text("STOP\ud800") == "STOP\ufffd"
    assert message_text("Stop ✋ \u202e\n") == "Stop ✋ \u202e\n"  # other characters are the person's
    assert message_text(None) == "" and message_text(["x"]) == '["x"]'


# Forms as providers send them and as a forger might: separators, escapes (valid, truncated, invalid UTF-8),
# plus signs, empty fields and fields without "=".
_FORM_PIECES = st.sampled_from(
    ["&", "=", "+", "%", "%2B", "%20", "%e2%82%ac", "%ff", "%4", "%zz", "a", "B", "é", ""]
)


@given(st.lists(st.one_of(_FORM_PIECES, st.text(max_size=4)), max_size=30).map("".join))
def test_a_form_is_read_exactly_as_parse_qsl_reads_it(text: str) -> None:
    """The webhooks' own form parser (quicker on the event loop) gives parse_qsl's pairs for any input: the
    signature is checked over the pairs the parser then reads, and neither may differ from the standard."""
    assert parse_urlencoded(text) == parse_qsl(text, keep_blank_values=True)


def test_a_twilio_form_is_read_as_parse_qsl_reads_it() -> None:
    text = "MessageSid=SM1&From=%2B14155550100&Body=Stop+it%21+%F0%9F%98%80&NumMedia=0&Empty=&Bare"
    assert parse_urlencoded(text) == parse_qsl(text, keep_blank_values=True)
    assert dict(parse_urlencoded(text))["Body"] == "Stop it! \U0001f600"
