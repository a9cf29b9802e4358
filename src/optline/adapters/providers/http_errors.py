"""Provider HTTP calls: one request on the hand-over's aiohttp session, and the mapping of answers and
transport failures onto the shared ``ErrorKind``s.

Why aiohttp: measured against a fake Twilio answering in 150 ms with 100 calls in flight
(bench/dispatch.py), aiohttp costs ~0.45 CPU ms per call; 100 threads sharing one ``httpx.Client`` cost
~5 ms (its connection pool's lock and scan under contention), one ``httpx.Client`` per thread ~2 ms, and
httpx's async client stays CPU-bound far below the ceiling. On a machine whose cores the worker shares
with its database, CPU per call is the worker's speed.

The session belongs to whoever runs the calls (services/handover.py: one per worker, its connection
limit K); a provider module knows only its API and gets the session with each call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp

from optline.adapters.providers.base import CodeTable, ErrorKind, ProviderError, redact

# The longest a provider call may take (dispatch_model.SEND_MARGIN allows for it).
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=5.0)
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """A provider's HTTP answer, read in full."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; {} when it is not one (error pages, empty answers)."""
        try:
            data = json.loads(self.text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def session(limit: int = 100) -> aiohttp.ClientSession:
    """The session of one worker's provider calls: up to ``limit`` connections, all kept alive (create it
    inside the event loop that uses it)."""
    return aiohttp.ClientSession(
        timeout=DEFAULT_TIMEOUT, connector=aiohttp.TCPConnector(limit=limit), raise_for_status=False
    )


async def request(
    http: aiohttp.ClientSession,
    provider: str,
    secrets: list[str],
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    """One request, its answer read in full; a transport failure or timeout is a ProviderError. ``form``: an
    application/x-www-form-urlencoded body (encoded here: aiohttp's own ``data=dict`` builds a multipart
    writer first, a measurable share of a call's CPU)."""
    if form is not None:
        kwargs["data"] = urlencode(form).encode()
        kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/x-www-form-urlencoded"}
    try:
        async with http.request(method, url, **kwargs) as response:
            text = await response.text(errors="replace")
            return Answer(response.status, response.headers, text)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise from_transport(provider, exc, secrets) from None


def run(call: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """One provider call from synchronous code (tests, the demo), on a session of its own."""

    async def go() -> T:
        async with session(limit=1) as http:
            return await call(http)

    return asyncio.run(go())


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form (RFC 9110 §10.2.3)
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def from_response(
    provider: str,
    response: Answer,
    code: str | None,
    message: str,
    secrets: list[str],
    codes: CodeTable | None = None,
) -> ProviderError:
    """The ProviderError for a non-success answer. ``code``: the provider's own error code, if any, looked
    up in ``codes`` (the provider's documented send errors) first; otherwise the HTTP status decides."""
    text = redact(f"{provider} HTTP {response.status}: {message}", secrets)
    known = (codes or {}).get(code or "")
    if known is not None:
        kind, meaning = known
        text = redact(f"{provider} HTTP {response.status} error {code} ({meaning}): {message}", secrets)
        after = retry_after(response.headers) if kind is ErrorKind.RETRY else None
        return ProviderError(kind, text, code=code, retry_after=after, outcome_unknown=response.status >= 500)
    if response.status == 429:
        return ProviderError(
            ErrorKind.RETRY, text, code=code or "429", retry_after=retry_after(response.headers)
        )
    if response.status >= 500:  # a server error may come after the message was accepted
        return ProviderError(
            ErrorKind.RETRY,
            text,
            code=code or str(response.status),
            retry_after=retry_after(response.headers),
            outcome_unknown=True,
        )
    if response.status in (401, 403):
        return ProviderError(ErrorKind.BAD_CONFIG, text, code=code or str(response.status))
    return ProviderError(ErrorKind.BAD_REQUEST, text, code=code or str(response.status))


def from_transport(provider: str, exc: BaseException, secrets: list[str]) -> ProviderError:
    """Timeouts and connection failures: transient. The message may have been accepted (reconcile first)."""
    code = "timeout" if isinstance(exc, TimeoutError) else "transport"
    detail = str(exc) or type(exc).__name__
    return ProviderError(
        ErrorKind.RETRY, redact(f"{provider} {code}: {detail}", secrets), code=code, outcome_unknown=True
    )
