"""Composing a message from a campaign template: personal fields, brand name, opt-out instructions.

Templates are Jinja2 in a sandbox (a template author cannot reach Python internals) with StrictUndefined:
a field the contact lacks is an error, never a blank in a customer's phone. ``template_fields`` lets lint
name unknown fields before anything is queued.

Program settings read here (``programs.settings`` JSON):
- ``optout_instruction``: ``"every"`` (default) adds the opt-out instruction to every marketing message;
  ``"monthly"`` only to the first marketing message a contact gets from the program in a calendar month.
- ``optout_link`` (default on, also for programs created before the setting existed): every marketing
  message whose template does not place ``{{ optout_url }}`` itself carries the person's one-tap opt-out
  link. The link is *not* subject to the ``monthly`` policy: that policy trims the STOP sentence from a
  month's later messages to save characters, but a person who wants to leave should always find the
  way out in the message in front of them, so those messages carry the short "Opt out: <link>" instead.
- ``language``: the program's default language for the instruction when the contact has no locale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from optline.domain.optout_links import optout_url as build_optout_url

OPTOUT_INSTRUCTIONS: dict[str, str] = {
    "en": "Reply STOP to opt out.",
    "es": "Responde STOP para darte de baja.",
    "fr": "Répondez STOP pour vous désabonner.",
    "pt": "Responda STOP para cancelar.",
}
# The instruction with the personal link. The STOP words come first (a phone that previews or hides a link
# still shows them) and the link last with nothing after it: some phones take a trailing full stop into the
# URL. "tap" is the shortest verb people know for a link; the whole adds about 6 words to the STOP sentence.
OPTOUT_WITH_LINK: dict[str, str] = {
    "en": "Reply STOP to opt out or tap {url}",
    "es": "Responde STOP para darte de baja o toca {url}",
    "fr": "Répondez STOP pour vous désabonner ou touchez {url}",
    "pt": "Responda STOP para cancelar ou toque {url}",
}
# The link alone: for a template that already tells people to reply STOP, and for a month's later messages
# under the "monthly" instruction policy.
OPTOUT_LINK_ONLY: dict[str, str] = {
    "en": "Opt out: {url}",
    "es": "Darte de baja: {url}",
    "fr": "Se désabonner : {url}",
    "pt": "Cancelar: {url}",
}
# What counts as an opt-out instruction already present in a template (any language, any keyword).
_HAS_OPTOUT = re.compile(r"\b(STOP|SAIR|PARAR|ARRET|ARRÊT|BAJA|UNSUBSCRIBE|optout_url)\b", re.IGNORECASE)

# Fields every template may use besides the contact's attributes.
BUILTIN_FIELDS = frozenset({"optout_url", "brand", "phone", "program"})

_PLACES_LINK = re.compile(r"\boptout_url\b")

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class TemplateError(ValueError):
    """A template that cannot be rendered; the message names the field or the syntax problem."""


@dataclass(frozen=True)
class Composed:
    body: str
    added_brand: bool
    added_optout: bool  # the STOP instruction was added
    added_link: bool  # the personal opt-out link was added (the template did not place it)


def optout_link_on(settings: Mapping[str, Any]) -> bool:
    """The program setting ``optout_link``; absent means on (the default for new and existing programs)."""
    return bool(settings.get("optout_link", True))


def language_of(locale: str | None, default: str = "en") -> str:
    lang = (locale or default or "en").split("-")[0].split("_")[0].lower()
    return lang if lang in OPTOUT_INSTRUCTIONS else "en"


def template_fields(template: str) -> set[str]:
    """Top-level names a template reads. Raises TemplateError on a syntax error."""
    try:
        return set(meta.find_undeclared_variables(_env.parse(template)))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None


def required_fields(template: str) -> set[str]:
    """The fields a template reads without a fallback: ``{{ first_name | default("there") }}`` needs no
    ``first_name``, ``{{ first_name }}`` does (StrictUndefined fails the message without it)."""
    try:
        tree = _env.parse(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    defaulted: set[int] = set()
    for f in tree.find_all(nodes.Filter):
        if f.name in ("default", "d") and isinstance(f.node, nodes.Name):
            defaulted.add(id(f.node))
    read = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and id(n) not in defaulted}
    return read & set(meta.find_undeclared_variables(tree))


def has_optout_instruction(text: str) -> bool:
    return bool(_HAS_OPTOUT.search(text))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def optout_instruction(body: str) -> str | None:
    """The sentence(s) of a sent message that tell the person how to opt out (None when there are none)."""
    found = [s for s in _SENTENCE_END.split(body.strip()) if _HAS_OPTOUT.search(s) or "/u/" in s]
    return " ".join(found) or None


def has_brand(text: str, brand: str) -> bool:
    return brand.strip().lower() in text.lower()


_ENDS_WITH_URL = re.compile(r"(?:https?://|www\.)\S+$", re.IGNORECASE)


def join_sentence(body: str, sentence: str) -> str:
    """Append a sentence the way a person would write it: "…today. Reply STOP to opt out.", not "…today Reply".

    After a link a full stop could be read as part of the URL by some phones, so the sentence starts a new
    line there (one character either way, like the space).
    """
    text = body.rstrip()
    if not text:
        return sentence
    if _ENDS_WITH_URL.search(text):
        return f"{text}\n{sentence}"
    if text[-1].isalnum() or text[-1] in ")%":
        return f"{text}. {sentence}"
    return f"{text} {sentence}"


_compiled: dict[str, Any] = {}


def render(template: str, fields: Mapping[str, Any]) -> str:
    compiled = _compiled.get(template)
    if compiled is None:
        try:
            compiled = _env.from_string(template)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
        if len(_compiled) > 256:
            _compiled.clear()
        _compiled[template] = compiled
    try:
        return str(compiled.render(**fields)).strip()
    except UndefinedError as exc:
        raise TemplateError(f"template field missing: {exc.message}") from None


def compose(
    template: str,
    *,
    brand: str,
    program_name: str,
    phone: str,
    attributes: Mapping[str, Any],
    locale: str | None,
    settings: Mapping[str, Any],
    marketing: bool,
    first_this_month: bool,
    public_url: str,
    optout_token: str | None,
) -> Composed:
    """The text a contact receives. ``first_this_month``: no marketing from this program yet this month.

    ``optout_token`` None means no link can be made (nothing personal to point at): the STOP sentence alone.
    """
    fields: dict[str, Any] = {**attributes, "brand": brand, "program": program_name, "phone": phone}
    url = build_optout_url(public_url, optout_token) if optout_token else None
    if url:
        fields["optout_url"] = url
    body = render(template, fields)
    added_brand = not has_brand(body, brand)
    if added_brand:
        body = f"{brand}: {body}"
    if not marketing:  # transactional messages and replies: never an instruction, never a link
        return Composed(body, added_brand, False, False)
    lang = language_of(locale, str(settings.get("language") or "en"))
    policy = settings.get("optout_instruction", "every")
    instruction = not has_optout_instruction(template) and (policy == "every" or first_this_month)
    link = url if url and optout_link_on(settings) and not _PLACES_LINK.search(template) else None
    if instruction and link:
        body = join_sentence(body, OPTOUT_WITH_LINK[lang].format(url=link))
    elif instruction:
        body = join_sentence(body, OPTOUT_INSTRUCTIONS[lang])
    elif link:
        body = join_sentence(body, OPTOUT_LINK_ONLY[lang].format(url=link))
    return Composed(body, added_brand, instruction, link is not None)
