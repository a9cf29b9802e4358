"""Jinja2 templates (autoescaped) and the small formatting filters the pages share."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from optline.adapters.clock import as_utc

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _num(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _when(value: datetime | None) -> str:
    if value is None:
        return "–"
    return as_utc(value).strftime("%b %-d, %Y %H:%M UTC")


def _day(value: datetime | None) -> str:
    return "–" if value is None else as_utc(value).strftime("%b %-d")


def _phone(value: str | None) -> str:
    """+14155550134 -> +1 415-555-0134: E.164 is for machines; people read groups of digits."""
    if not value:
        return "–"
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


_INTENTS = {"optout": "opt-out", "optin": "opt-in", "help": "help", "other": "other"}


def intent_label(value: str | None) -> str:
    return _INTENTS.get(value or "", value or "–")


def _iso(value: datetime | None) -> str:
    return "" if value is None else as_utc(value).isoformat()


templates.env.filters.update(
    num=_num, pct=_pct, when=_when, day=_day, iso=_iso, phone=_phone, intent=intent_label
)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)
