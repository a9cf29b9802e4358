"""What every provider's ``webhook.py`` receives: the request as the provider signed it, framework-free.

The URL is rebuilt from ``settings.public_url`` (OPTLINE_PUBLIC_URL) because optline usually sits behind a
proxy: providers sign the URL *they* called, not the one the application server sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl


class SignatureError(Exception):
    """The request is not authentic (missing, wrong or expired signature): answer 403, record nothing."""


class PayloadError(ValueError):
    """The request is authentic but not a message we understand; the text names the missing field."""


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    url: str  # the public URL the provider called, query string included
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    query: list[tuple[str, str]] = field(default_factory=list)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"

    def form(self) -> list[tuple[str, str]]:
        """Form-encoded POST body as ordered pairs (repeated names kept)."""
        if self.is_json or not self.body:
            return []
        return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True)

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"request body is not valid JSON: {exc}") from None

    def params(self) -> dict[str, str]:
        """Query and form (or flat JSON object) parameters in one dict; the body wins over the query."""
        values = dict(self.query)
        if self.is_json:
            data = self.json()
            if isinstance(data, dict):
                values.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
        else:
            values.update(dict(self.form()))
        return values


def public_url(base: str, path: str, query: str = "") -> str:
    """The URL a provider called: OPTLINE_PUBLIC_URL + the path (+ query string)."""
    url = base.rstrip("/") + path
    return f"{url}?{query}" if query else url


def require(params: dict[str, Any], *names: str, provider: str) -> str:
    """The first of ``names`` present and non-empty, or a PayloadError naming what is missing."""
    for name in names:
        value = params.get(name)
        if value not in (None, ""):
            return str(value)
    raise PayloadError(f"{provider} webhook: missing field {' / '.join(names)}")
