"""The support contact a HELP reply names (issue 19): a website, an email address or a phone number."""

from __future__ import annotations

import pytest

from optline.domain.support_contact import SupportContactError, read_support_contact
from optline.services.programs import default_help_text


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("https://acme.example/help", "https://acme.example/help"),
        ("acme.example/help", "acme.example/help"),
        ("help@acme.example", "help@acme.example"),
        ("(800) 555-0199", "+18005550199"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_a_contact_is_kept_as_it_will_be_shown(typed: str, stored: str) -> None:
    assert read_support_contact(typed) == stored


@pytest.mark.parametrize("typed", ["", "   ", "contact us", "help", "123", "https://nohost", "mailto"])
def test_what_nobody_could_use_is_refused_naming_it(typed: str) -> None:
    with pytest.raises(SupportContactError, match="support contact"):
        read_support_contact(typed)


def test_the_default_help_reply_names_the_contact_and_is_not_circular() -> None:
    text = default_help_text("Acme", "Msg frequency varies", "help@acme.example")
    assert text == (
        "Acme: help at help@acme.example. Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out."
    )
    assert "reply HELP" not in text
