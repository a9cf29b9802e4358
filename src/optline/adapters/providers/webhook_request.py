"""What every provider's ``webhook.py`` receives: the request as the provider signed it, framework-free.

The URL is rebuilt from ``settings.public_url`` (OPTLINE_PUBLIC_URL) because optline usually sits behind a
proxy: providers sign the URL *they* called, not the one the application server sees.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl


class SignatureError(Exception):
    """The request is not authentic (missing, wrong or expired signature): answer 403, record nothing."""


class PayloadError(ValueError):
    """The request is authentic but not a message we understand; the text names the missing field."""


class UnsupportedMediaType(PayloadError):
    """The body is not in the format the provider sends (answer 415): it is refused before anything in it is
    read, because a signature computed over one reading of the bytes says nothing about another."""


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    url: str  # the public URL the provider called, query string included
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    query: list[tuple[str, str]] = field(default_factory=list)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @cached_property  # (asked by the signature check, the parser and is_json: worked out once)
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def is_json(self) -> bool:
        return self.content_type == JSON

    def require_media_type(self, provider: str, *allowed: str) -> None:
        """A header check, made before the signature and before the body is parsed."""
        if self.content_type not in allowed:
            raise UnsupportedMediaType(
                f"{provider} webhook: Content-Type {self.content_type or '(none)'!r} is not "
                f"{' or '.join(allowed)}, the format {provider} sends"
            )

    def form(self) -> list[tuple[str, str]]:
        """The form-encoded body as ordered pairs (repeated names kept); any other body is refused."""
        self.require_media_type("webhook", FORM)
        return list(self._form)

    @cached_property
    def _form(self) -> tuple[tuple[str, str], ...]:
        # Parsed once: the signature check and the parser read the same pairs (and a webhook's body is never
        # changed after it was read: the dataclass is frozen).
        try:
            return tuple(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise PayloadError(f"request body is not UTF-8: {exc}") from None

    def json(self) -> Any:
        """The JSON body; any other body is refused (NaN and Infinity are not JSON, and no provider nests
        a few thousand levels deep)."""
        self.require_media_type("webhook", JSON)
        try:
            return json.loads(self.body.decode("utf-8"), parse_constant=_not_json)
        except RecursionError:
            raise PayloadError("request body is not valid JSON: nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, an integer of thousands of digits
            raise PayloadError(f"request body is not valid JSON: {exc}") from None

    def json_params(self) -> dict[str, str]:
        """A flat JSON object's members as strings (nested values as their JSON text)."""
        data = self.json()
        if not isinstance(data, dict):
            raise PayloadError("request body is not a JSON object")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}

    def query_and_form(self) -> dict[str, str]:
        """For providers whose signature covers the URL and the form: both, the body winning over the query."""
        return {**dict(self.query), **dict(self.form())}


def public_url(base: str, path: str, query: str = "") -> str:
    """The URL a provider called: OPTLINE_PUBLIC_URL + the path (+ query string)."""
    url = base.rstrip("/") + path
    return f"{url}?{query}" if query else url


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


# The longest values the tables keep (adapters/db/tables.py): provider ids String(100), phone numbers
# String(20), statuses String(20), error codes String(50). A longer one is no provider's: refused with a 400
# naming it, on both engines alike (PostgreSQL would refuse it at the INSERT, a 500 the provider retries
# forever; SQLite would keep it).
ID_LENGTH, PHONE_LENGTH, STATUS_LENGTH, CODE_LENGTH = 100, 20, 20, 50
# Control characters (NUL among them: PostgreSQL cannot store it in text) and lone surrogates (not encodable
# as UTF-8: a JSON body may carry them as \ud800 escapes) have no place in an id, a number or a status.
_UNUSABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def checked(value: Any, name: str, *, provider: str, limit: int = ID_LENGTH) -> str:
    """``value`` as an id, number, status or code: a string of at most ``limit`` printable characters, or a
    PayloadError naming the field."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise PayloadError(f"{provider} webhook: field {name} is not a string")
    text = str(value)
    if len(text) > limit:
        raise PayloadError(f"{provider} webhook: field {name} is longer than {limit} characters")
    if _UNUSABLE.search(text):
        raise PayloadError(f"{provider} webhook: field {name} contains control or invalid characters")
    return text


def require(params: dict[str, Any], *names: str, provider: str, limit: int = ID_LENGTH) -> str:
    """The first of ``names`` present and non-empty, checked (``checked``), or a PayloadError naming what is
    missing or wrong."""
    for name in names:
        value = params.get(name)
        if value not in (None, ""):
            return checked(value, name, provider=provider, limit=limit)
    raise PayloadError(f"{provider} webhook: missing field {' / '.join(names)}")


def optional(params: dict[str, Any], name: str, *, provider: str, limit: int) -> str | None:
    """An optional field (an error code, a receipt's numbers): None when absent or empty, else checked."""
    value = params.get(name)
    return None if value in (None, "") else checked(value, name, provider=provider, limit=limit)


def message_text(value: Any) -> str:
    """What a person texted, as it can be stored: NUL characters (which PostgreSQL cannot keep in text and
    no handset means) removed and lone surrogates replaced, and nothing else changed — a STOP\x00 is
    still a STOP, and an opt-out must never be lost for a stray byte (DESIGN.md invariant 3)."""
    text = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
    text = text.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile(r"[\ud800-\udfff]")
