"""Mapping HTTP answers and transport failures of provider send APIs onto the shared ``ErrorKind``s."""

from __future__ import annotations

from typing import Any

import httpx

from optline.adapters.providers.base import CodeTable, ErrorKind, ProviderError, redact

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            from datetime import UTC, datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def from_response(
    provider: str,
    response: httpx.Response,
    code: str | None,
    message: str,
    secrets: list[str],
    codes: CodeTable | None = None,
) -> ProviderError:
    """The ProviderError for a non-success answer. ``code``: the provider's own error code, if any, looked
    up in ``codes`` (the provider's documented send errors) first; otherwise the HTTP status decides."""
    text = redact(f"{provider} HTTP {response.status_code}: {message}", secrets)
    known = (codes or {}).get(code or "")
    if known is not None:
        kind, meaning = known
        text = redact(f"{provider} HTTP {response.status_code} error {code} ({meaning}): {message}", secrets)
        after = retry_after(response) if kind is ErrorKind.RETRY else None
        return ProviderError(
            kind, text, code=code, retry_after=after, outcome_unknown=response.status_code >= 500
        )
    if response.status_code == 429:
        return ProviderError(ErrorKind.RETRY, text, code=code or "429", retry_after=retry_after(response))
    if response.status_code >= 500:  # a server error may come after the message was accepted
        return ProviderError(ErrorKind.RETRY, text, code=code or str(response.status_code),
                             retry_after=retry_after(response), outcome_unknown=True)  # fmt: skip
    if response.status_code in (401, 403):
        return ProviderError(ErrorKind.BAD_CONFIG, text, code=code or str(response.status_code))
    return ProviderError(ErrorKind.BAD_REQUEST, text, code=code or str(response.status_code))


def from_transport(provider: str, exc: httpx.TransportError, secrets: list[str]) -> ProviderError:
    """Timeouts and connection failures: transient. The message may have been accepted (reconcile first)."""
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport"
    return ProviderError(
        ErrorKind.RETRY, redact(f"{provider} {code}: {exc}", secrets), code=code, outcome_unknown=True
    )


def json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
