"""The words of a sign-up: the CTIA call-to-action disclosure, the double opt-in prompt, and what counts as
an explicit "yes" or a join keyword. Pure functions, no I/O.

A program's disclosure is stored as numbered versions (``disclosure_versions``); every opt-in's evidence
names the version the person saw, so the text here is only the *default* a program starts with.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from optline.domain import segments

DEFAULT_WHAT = "recurring automated marketing text messages"
RATES = "Msg & data rates may apply."
NOT_A_CONDITION = "Consent is not a condition of purchase."


def call_to_action(program: Mapping[str, Any]) -> str:
    """The default disclosure for a program: every CTIA call-to-action element, in one paragraph.

    Shown beside the web form's checkbox and sent in the double opt-in prompt, so it names the brand,
    what is sent and how often, the rates, HELP/STOP, the terms and privacy links, and that consent is
    not a condition of purchase.
    """
    settings = program.get("settings") or {}
    what = str(settings.get("signup_description") or DEFAULT_WHAT)
    frequency = str(program.get("frequency_text") or "Msg frequency varies").rstrip(".")
    parts = [
        f"By signing up you agree to receive {what} from {program['brand']} at the number provided.",
        NOT_A_CONDITION,
        f"{frequency}.",
        RATES,
        "Reply HELP for help, STOP to cancel.",
    ]
    if program.get("terms_url"):
        parts.append(f"Terms: {program['terms_url']}")
    if program.get("privacy_url"):
        parts.append(f"Privacy: {program['privacy_url']}")
    return " ".join(parts)


PROMPT_MAX_SEGMENTS = 2


def double_opt_in_prompt(program: Mapping[str, Any]) -> str:
    """The SMS that asks for the explicit yes, within two segments, with every CTIA element once: the brand,
    what is sent and how often, the rates, HELP and STOP (each once), and the terms link when it fits.

    The full disclosure the person saw stays in the sign-up's evidence (its version); pasting it after the
    call to confirm said "STOP to cancel" twice and ran to three segments. Optional parts go first when the
    text would not fit: the terms link, "not a condition of purchase", then the description of what is sent.
    """
    settings = program.get("settings") or {}
    brand = str(program["brand"])
    what = str(settings.get("signup_description") or "marketing texts")
    frequency = str(program.get("frequency_text") or "Msg frequency varies").rstrip(".")
    terms = f" Terms: {program['terms_url']}" if program.get("terms_url") else ""
    candidates = (
        (what, " Consent not a condition of purchase.", terms),
        (what, " Consent not a condition of purchase.", ""),
        (what, "", ""),
        ("texts", "", ""),
    )
    text = ""
    for described, condition, link in candidates:
        text = (
            f"{brand}: Reply Y to confirm you want {described} from us. {frequency}. {RATES}"
            f"{condition} Reply HELP for help, STOP to cancel.{link}"
        )
        if segments.count(text).segments <= PROMPT_MAX_SEGMENTS:
            break
    return text


def welcome(program: Mapping[str, Any]) -> str:
    """The reply once a sign-up is confirmed (or a single opt-in keyword was received)."""
    frequency = str(program.get("frequency_text") or "Msg frequency varies").rstrip(".")
    return f"{program['brand']}: you're subscribed. {frequency}. {RATES} Reply HELP for help, STOP to cancel."


def already_subscribed(program: Mapping[str, Any]) -> str:
    return f"{program['brand']}: you're already subscribed. Reply HELP for help, STOP to cancel."


def expired_notice(program: Mapping[str, Any], keywords: Iterable[str]) -> str:
    """The reply to a late yes: the sign-up window closed, nothing was subscribed."""
    first = next(iter(keywords), None)
    again = f"Text {first} to sign up again." if first else "Sign up again to receive messages."
    return f"{program['brand']}: that sign-up request expired, so you are not subscribed. {again}"


# Each CTIA element a disclosure must carry, and how to recognise it (case-insensitive).
_ELEMENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "message frequency (e.g. 'Msg frequency varies' or '4 msgs/month')",
        re.compile(
            r"frequency|\bper\s+(day|week|month)|/\s*(day|week|wk|month|mo)\b|\b(daily|weekly|monthly)\b"
        ),
    ),
    ("'Msg & data rates may apply'", re.compile(r"msg\s*(&|and)\s*data\s+rates\s+may\s+apply")),
    ("STOP opt-out instructions", re.compile(r"\bstop\b")),
    ("HELP instructions", re.compile(r"\bhelp\b")),
    ("'Consent is not a condition of purchase'", re.compile(r"not\s+a\s+condition\s+of\s+(any\s+)?purchase")),
)


def missing_elements(text: str, program: Mapping[str, Any]) -> list[str]:
    """CTIA elements a disclosure text lacks (empty when complete): the brand, what, frequency, rates,
    STOP/HELP, "not a condition of purchase", and the program's terms and privacy links when it has them."""
    lowered = text.lower()
    missing = []
    if str(program["brand"]).lower() not in lowered:
        missing.append(f"the brand name {program['brand']!r}")
    missing += [name for name, pattern in _ELEMENTS if not pattern.search(lowered)]
    for key, label in (("terms_url", "terms link"), ("privacy_url", "privacy link")):
        if program.get(key) and str(program[key]).lower() not in lowered:
            missing.append(f"the {label} {program[key]}")
    return missing


def _normalise(text: str) -> str:
    """Upper case, accents removed, surrounding whitespace and closing punctuation (. ! emoji) dropped."""
    folded = unicodedata.normalize("NFKD", text.strip())
    folded = "".join(c for c in folded if not unicodedata.combining(c)).upper()
    # A question ("yes?") is not an explicit yes, so '?' is kept and makes the reply unmatched.
    return re.sub(r"[\s.!]+$", "", re.sub(r"^[\s.!¡]+", "", folded))


# An explicit yes, in English, Spanish, French, Portuguese and a few close neighbours. Whole-message matches
# only: "yes stop", "yes?" or "ok" are not a yes, because a court asks whether the person clearly agreed.
CONFIRMATIONS = frozenset(
    {
        "Y", "YES", "YEA", "YEAH", "YEP", "CONFIRM", "CONFIRMED", "I CONFIRM", "I AGREE", "AGREE",
        "SI", "CONFIRMAR", "CONFIRMO", "ACEPTO",  # Spanish (SÍ folds to SI)
        "OUI", "CONFIRMER", "JE CONFIRME", "J'ACCEPTE",  # French
        "SIM", "CONFIRMA", "ACEITO",  # Portuguese
        "JA",  # German, Dutch
    }
)  # fmt: skip


def is_confirmation(text: str) -> bool:
    """True when ``text`` is, as a whole, an explicit yes (Y, YES, SI, SÍ, OUI, SIM, …)."""
    return _normalise(text or "") in CONFIRMATIONS


# Words that can never start a sign-up, whatever a program lists: an opt-out or a HELP must always be one
# (CTIA and invariant 2), and a yes is the confirmation of a sign-up, not its start.
RESERVED = (
    frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "HELP", "INFO"})
    | CONFIRMATIONS
)


def matched_keyword(text: str, keywords: Iterable[str]) -> str | None:
    """The join keyword ``text`` is (whole message, any case, trailing ! or . allowed), or None."""
    reply = _normalise(text or "")
    if not reply or reply in RESERVED:
        return None
    for keyword in keywords:
        if _normalise(keyword) == reply:
            return str(keyword).upper()
    return None


def mask_phone(e164: str) -> str:
    """A number as shown back on a public page: only the last four digits (no leak of who signed up)."""
    return f"•••• {e164[-4:]}" if len(e164) >= 4 else "••••"
