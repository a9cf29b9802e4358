"""The automatic answers (opt-out and opt-in confirmations, the default HELP text) in the person's language.

A Spanish "dejen de mandarme mensajes" gets its confirmation in Spanish: the language is the one the classifier
read in the reply (or the contact's locale, which the classifier already uses as its hint for shared words
such as STOP). English, Spanish, French and Portuguese; anything else is answered in English.

Only the defaults are translated. A program's own help text, and a frequency text other than the default, are
the operator's words and stay as configured. The keywords named in each text are ones the classifier
recognises in that language (STOP is understood everywhere).
"""

from __future__ import annotations

from typing import Final

LANGUAGES: Final = ("en", "es", "fr", "pt")
DEFAULT_FREQUENCY: Final = "Msg frequency varies"

_TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "scope_all": "all {brand} messages",
        "optout": "{brand}: you are unsubscribed from {scope} and will receive no more messages. "
        "Reply START to rejoin.",
        "optin": "{brand}: you are subscribed to {name}. {frequency}. Msg & data rates may apply. "
        "Reply HELP for help, STOP to opt out.",
        "help": "{brand}: help at {contact}. {frequency}. Msg & data rates may apply. Reply STOP to opt out.",
        "frequency": DEFAULT_FREQUENCY,
    },
    "es": {
        "scope_all": "todos los mensajes de {brand}",
        "optout": "{brand}: te has dado de baja de {scope} y no recibirás más mensajes. "
        "Responde START para volver a suscribirte.",
        "optin": "{brand}: te has suscrito a {name}. {frequency}. Pueden aplicarse tarifas de mensajes y "
        "datos. Responde AYUDA para obtener ayuda o STOP para darte de baja.",
        "help": "{brand}: ayuda en {contact}. {frequency}. Pueden aplicarse tarifas de mensajes y datos. "
        "Responde STOP para darte de baja.",
        "frequency": "La frecuencia de mensajes varía",
    },
    "fr": {
        "scope_all": "tous les messages de {brand}",
        "optout": "{brand} : vous êtes désabonné(e) de {scope} et ne recevrez plus de messages. "
        "Répondez START pour vous réabonner.",
        "optin": "{brand} : vous êtes abonné(e) à {name}. {frequency}. Des frais de messages et de données "
        "peuvent s'appliquer. Répondez AIDE pour de l'aide, ARRET pour vous désabonner.",
        "help": "{brand} : aide au {contact}. {frequency}. Des frais de messages et de données peuvent "
        "s'appliquer. Répondez ARRET pour vous désabonner.",
        "frequency": "La fréquence des messages varie",
    },
    "pt": {
        "scope_all": "todas as mensagens de {brand}",
        "optout": "{brand}: você cancelou a inscrição em {scope} e não receberá mais mensagens. "
        "Responda START para voltar.",
        "optin": "{brand}: você se inscreveu em {name}. {frequency}. Podem ser cobradas tarifas de "
        "mensagens e dados. Responda AJUDA para obter ajuda ou SAIR para cancelar.",
        "help": "{brand}: ajuda em {contact}. {frequency}. Podem ser cobradas tarifas de mensagens e dados. "
        "Responda SAIR para cancelar.",
        "frequency": "A frequência de mensagens varia",
    },
}


def reply_language(language: str | None) -> str:
    """The language to answer in: the reply's own, when we have texts for it; English otherwise."""
    lang = (language or "").lower()[:2]
    return lang if lang in _TEXTS else "en"


def _frequency(frequency: str, lang: str) -> str:
    """The default frequency text is ours to translate; an operator's own text stays as written."""
    return _TEXTS[lang]["frequency"] if frequency.strip() == DEFAULT_FREQUENCY else frequency


def optout_confirmation(brand: str, name: str, *, brand_wide: bool, language: str | None = "en") -> str:
    lang = reply_language(language)
    scope = _TEXTS[lang]["scope_all"].format(brand=brand) if brand_wide else f"{brand} {name}"
    return _TEXTS[lang]["optout"].format(brand=brand, scope=scope)


def optin_confirmation(brand: str, name: str, frequency: str, *, language: str | None = "en") -> str:
    lang = reply_language(language)
    return _TEXTS[lang]["optin"].format(brand=brand, name=name, frequency=_frequency(frequency, lang))


def default_help(brand: str, frequency: str, contact: str, *, language: str | None = "en") -> str:
    """Brand, where to get help (the program's support contact: CTIA's customer-care element), frequency,
    rates and how to stop. Never "reply HELP for help" to someone who just did."""
    lang = reply_language(language)
    return _TEXTS[lang]["help"].format(brand=brand, frequency=_frequency(frequency, lang), contact=contact)


def help_reply(
    configured: str, brand: str, frequency: str, contact: str | None, *, language: str | None = "en"
) -> str:
    """The answer to HELP: the program's configured text, translated only when it is still our default."""
    if contact and configured == default_help(brand, frequency, contact):
        return default_help(brand, frequency, contact, language=language)
    return configured
