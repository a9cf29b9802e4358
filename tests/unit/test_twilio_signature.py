"""Twilio's signature string as its own SDK builds it (twilio.request_validator.compute_signature), for any
form: repeated names, repeated values, empty values, names that sort like values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from optline.adapters.providers.twilio.webhook import _signature
from tests.support.hostile import _Multi

TOKEN = "12345678901234567890123456789012"
URL = "https://sms.example.com/webhooks/twilio/sms?x=1"
text = st.text(alphabet="ab=&+ é0", max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(text, text), max_size=12))
def test_the_signature_is_the_sdks_for_any_form(pairs: list[tuple[str, str]]) -> None:
    multi = _Multi()
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    assert _signature(TOKEN.encode(), URL, pairs) == RequestValidator(TOKEN).compute_signature(URL, multi)
