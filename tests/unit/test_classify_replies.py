"""Automatic answers in the language of the reply (domain/replies.py)."""

from __future__ import annotations

import pytest

from optline.domain import replies
from optline.domain.classify import classify
from optline.services.programs import default_help_text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("dejen de mandarme mensajes", "te has dado de baja de Acme deals"),
        ("ne m'envoyez plus de messages", "vous êtes désabonné(e) de Acme deals"),
        ("não quero mais receber", "você cancelou a inscrição em Acme deals"),
        ("STOP", "you are unsubscribed from Acme deals"),
    ],
)
def test_opt_out_confirmation_follows_the_language_the_classifier_read(text: str, words: str) -> None:
    body = replies.optout_confirmation("Acme", "deals", brand_wide=False, language=classify(text).language)
    assert body.startswith("Acme") and words in body and "START" in body


def test_brand_wide_scope_is_translated() -> None:
    body = replies.optout_confirmation("Acme", "deals", brand_wide=True, language="es")
    assert "todos los mensajes de Acme" in body


def test_unknown_languages_are_answered_in_english() -> None:
    assert replies.reply_language("und") == "en" and replies.reply_language(None) == "en"
    assert replies.reply_language("pt-BR") == "pt"


def test_optin_translates_only_the_default_frequency() -> None:
    assert "La fréquence des messages varie" in replies.optin_confirmation(
        "Acme", "deals", replies.DEFAULT_FREQUENCY, language="fr"
    )
    custom = replies.optin_confirmation("Acme", "deals", "Up to 4 msgs/month", language="fr")
    assert "Up to 4 msgs/month" in custom and "AIDE" in custom


def test_default_help_is_translated_and_a_custom_one_is_not() -> None:
    default = default_help_text("Acme", replies.DEFAULT_FREQUENCY, "help@acme.example")
    contact = "help@acme.example"
    assert replies.help_reply(default, "Acme", replies.DEFAULT_FREQUENCY, contact, language="en") == default
    spanish = replies.help_reply(default, "Acme", replies.DEFAULT_FREQUENCY, contact, language="es")
    assert spanish != default and "ayuda en help@acme.example" in spanish
    assert "La frecuencia de mensajes varía" in spanish
    custom = "Call us at 555-0100"
    assert replies.help_reply(custom, "Acme", replies.DEFAULT_FREQUENCY, contact, language="es") == custom
