"""Outbound event webhooks: the rules, no I/O.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com/): headers
``webhook-id`` (the same on every attempt and replay, so receivers deduplicate by it), ``webhook-timestamp``
(seconds) and ``webhook-signature`` = ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the
base64-decoded part of a ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from datetime import timedelta
from enum import StrEnum
from urllib.parse import urlsplit


class EventType(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    OPT_IN_CONFIRMED = "opt_in_confirmed"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_FAILED = "message.failed"
    REVIEW_NEEDED = "review.needed"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Retries back off exponentially from a base (30 s by default: 30 s, 1 min, 2 min … capped at 3 h) and stop
# once the next attempt would fall more than a day after the event: then the delivery is marked failed and
# stays replayable.
RETRY_WINDOW = timedelta(days=1)
MAX_RETRY_DELAY = timedelta(hours=3)
SNIPPET_CHARS = 500  # how much of a response body an attempt keeps


class EndpointError(ValueError):
    """An endpoint that cannot be registered; the message names what is wrong."""


def parse_events(events: list[str] | tuple[str, ...]) -> list[str]:
    """The chosen event types, checked and in canonical order (at least one)."""
    chosen = {e.strip() for e in events if e.strip()}
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise EndpointError(
            f"unknown event type(s) {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)}"
        )
    if not chosen:
        raise EndpointError(f"choose at least one event type: {', '.join(EVENT_TYPES)}")
    return [t for t in EVENT_TYPES if t in chosen]


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, development: bool) -> str:
    """The endpoint URL, or EndpointError. HTTPS always; plain http only in development or to this machine
    (a signature proves who sent an event, but over http anyone on the path reads the phone numbers)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointError(f"endpoint URL {url!r} must be an absolute https:// URL")
    if parts.username or parts.password:
        raise EndpointError("endpoint URL must not carry a user name or password (deliveries are signed)")
    if parts.scheme == "http" and not development and not _is_local(parts.hostname):
        raise EndpointError(
            f"endpoint URL {url!r} uses plain http; use https (http is accepted only for localhost or in development)"
        )
    if len(url) > 500:
        raise EndpointError("endpoint URL is longer than 500 characters")
    return url


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    """A webhook-id: unique per event and endpoint, kept across retries and replays."""
    return "msg_" + secrets.token_urlsafe(18)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "user-agent": "optline-webhooks",
    }


def retry_delay(failed_attempts: int, base: timedelta) -> timedelta:
    """How long after its ``failed_attempts``-th failure (1, 2, …) a delivery is tried again."""
    return min(MAX_RETRY_DELAY, base * 2 ** max(0, failed_attempts - 1))


def is_success(status_code: int) -> bool:
    return 200 <= status_code < 300
