"""The sign-up words: explicit yes, join keywords, the CTIA disclosure elements."""

from __future__ import annotations

import re
from typing import Any

import pytest

from optline.domain import disclosure, segments
from optline.domain.consent import Action, Channel, Status, next_status

PROGRAM = {
    "name": "deals",
    "brand": "Acme Coffee",
    "frequency_text": "Up to 4 msgs/month",
    "terms_url": "https://acme.example/terms",
    "privacy_url": "https://acme.example/privacy",
    "settings": {},
}


@pytest.mark.parametrize(
    "text",
    ["Y", "y", "YES", "yes!", " Yes. ", "SI", "Sí", "sí", "OUI", "oui!", "SIM", "Sim", "confirm", "¡Sí!"],
)
def test_explicit_yes(text: str) -> None:
    assert disclosure.is_confirmation(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yes?",
        "ok",
        "okay",
        "sure",
        "yes stop",
        "STOP",
        "no",
        "N",
        "maybe",
        "yess",
        "y y",
        "who is this",
        "YES but not marketing",
        "👍",
    ],
)
def test_not_an_explicit_yes(text: str) -> None:
    assert not disclosure.is_confirmation(text)


def test_join_keywords_match_whole_messages_only() -> None:
    keywords = ["JOIN", "DEALS"]
    assert disclosure.matched_keyword("join", keywords) == "JOIN"
    assert disclosure.matched_keyword(" Deals! ", keywords) == "DEALS"
    assert disclosure.matched_keyword("join me", keywords) is None
    assert disclosure.matched_keyword("", keywords) is None
    assert disclosure.matched_keyword("JOIN", []) is None


def test_default_disclosure_has_every_ctia_element() -> None:
    text = disclosure.call_to_action(PROGRAM)
    for element in (
        "Acme Coffee",
        "Up to 4 msgs/month",
        "Msg & data rates may apply",
        "STOP",
        "HELP",
        "Consent is not a condition of purchase",
        PROGRAM["terms_url"],
        PROGRAM["privacy_url"],
        "recurring automated marketing text messages",
    ):
        assert element in text
    assert disclosure.missing_elements(text, PROGRAM) == []


@pytest.mark.parametrize(
    "program",
    [
        PROGRAM,
        {**PROGRAM, "terms_url": None, "privacy_url": None},
        {
            **PROGRAM,
            "brand": "The Extremely Long Brand Name Coffee Roasters of the Pacific Northwest",
            "settings": {
                "signup_description": "weekly deals on single-origin beans, brewing gear and tasting events"
            },
            "terms_url": "https://acme.example/legal/sms-program/terms-and-conditions-2026",
        },
    ],
)
def test_double_opt_in_prompt_fits_two_segments_with_every_element_once(program: dict[str, Any]) -> None:
    prompt = disclosure.double_opt_in_prompt(program)
    assert segments.count(prompt).segments <= 2, prompt
    assert prompt.startswith(f"{program['brand']}: Reply Y to confirm")
    for element in (program["frequency_text"], "Msg & data rates may apply", "HELP"):
        assert prompt.count(element) == 1, prompt
    assert len(re.findall(r"\bSTOP\b", prompt)) == 1, prompt


def test_missing_elements_are_named() -> None:
    missing = disclosure.missing_elements("Get texts! Reply STOP to end.", PROGRAM)
    assert any("Acme Coffee" in m for m in missing)
    assert any("rates" in m for m in missing)
    assert any("HELP" in m for m in missing)
    assert any("condition of purchase" in m for m in missing)
    assert any("frequency" in m for m in missing)
    assert any("terms link" in m for m in missing) and any("privacy link" in m for m in missing)
    assert "STOP opt-out instructions" not in missing


def test_description_setting_names_what_is_sent() -> None:
    text = disclosure.call_to_action({**PROGRAM, "settings": {"signup_description": "weekly coffee deals"}})
    assert "receive weekly coffee deals from Acme Coffee" in text


def test_pending_double_opt_in_is_not_completed_by_an_import() -> None:
    assert next_status(Status.PENDING, Action.OPT_IN, Channel.IMPORT) is Status.PENDING
    assert next_status(Status.PENDING, Action.OPT_IN_CONFIRMED, Channel.SMS_KEYWORD) is Status.SUBSCRIBED
    assert next_status(Status.NEVER, Action.OPT_IN, Channel.IMPORT) is Status.SUBSCRIBED


def test_mask_phone_shows_last_four_only() -> None:
    assert disclosure.mask_phone("+14155550134") == "•••• 0134"


@pytest.mark.parametrize("word", ["STOP", "stop", "Help", "UNSUBSCRIBE", "YES", "Y"])
def test_reserved_words_never_start_a_signup(word: str) -> None:
    assert disclosure.matched_keyword(word, ["STOP", "HELP", "UNSUBSCRIBE", "YES", "Y"]) is None
