"""The rules for what a webhook may carry (adapters/providers/webhook_request.py): ids, numbers and codes are
short printable strings, or a 400 naming the field; a message's text loses only what cannot be stored."""

from __future__ import annotations

import pytest

from optline.adapters.providers.webhook_request import (
    PHONE_LENGTH,
    PayloadError,
    checked,
    message_text,
    optional,
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
