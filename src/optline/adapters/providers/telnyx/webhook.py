"""Telnyx webhooks (API v2): JSON events signed with Ed25519 over ``<telnyx-timestamp>|<raw body>``.

The public key is the one shown in the Telnyx portal (base64, OPTLINE_TELNYX_PUBLIC_KEY). Timestamps more
than 5 minutes old (or ahead) are refused: a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from optline.adapters.providers.base import InboundSms, StatusUpdate, is_opt_out
from optline.adapters.providers.telnyx.send import ERRORS
from optline.adapters.providers.webhook_request import (
    CODE_LENGTH,
    JSON,
    PHONE_LENGTH,
    STATUS_LENGTH,
    PayloadError,
    SignatureError,
    WebhookRequest,
    checked,
    message_text,
    require,
)

NAME = "telnyx"
MAX_AGE_SECONDS = 300
_STATUSES = {
    "queued": "sent", "sending": "sent", "sent": "sent", "delivered": "delivered",
    "delivery_unconfirmed": "sent", "delivery_failed": "undelivered", "sending_failed": "failed",
    "expired": "undelivered", "gw_timeout": "failed", "dlr_timeout": "undelivered",
}  # fmt: skip


def verify(request: WebhookRequest, public_key: str, now: datetime) -> None:
    request.require_media_type(NAME, JSON)  # Telnyx posts JSON events; the signature covers the raw body
    if not public_key:
        raise SignatureError("telnyx: OPTLINE_TELNYX_PUBLIC_KEY is not set, cannot verify webhooks")
    sig_header = request.headers.get("telnyx-signature-ed25519", "")
    stamp = request.headers.get("telnyx-timestamp", "")
    if not sig_header or not stamp:
        raise SignatureError("telnyx: missing telnyx-signature-ed25519 or telnyx-timestamp header")
    try:
        age = now.timestamp() - int(stamp)
    except ValueError:
        raise SignatureError("telnyx: telnyx-timestamp is not a number") from None
    if abs(age) > MAX_AGE_SECONDS:
        raise SignatureError("telnyx: timestamp is more than 5 minutes away (replayed request?)")
    try:
        key = VerifyKey(base64.b64decode(public_key, validate=True))
        signature = base64.b64decode(sig_header, validate=True)
        key.verify(stamp.encode() + b"|" + request.body, signature)
    except (BadSignatureError, binascii.Error, ValueError, TypeError):
        raise SignatureError("telnyx: Ed25519 signature does not match") from None


def _event(request: WebhookRequest) -> dict[str, Any]:
    data = request.json()
    event = data.get("data") if isinstance(data, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("payload"), dict):
        raise PayloadError("telnyx webhook: expected {data: {event_type, payload: {...}}}")
    return event


def _payload(request: WebhookRequest, *event_types: str) -> dict[str, Any]:
    event = _event(request)
    if event.get("event_type") not in event_types:
        raise PayloadError(
            f"telnyx webhook: data.event_type {event.get('event_type')!r:.40} is not {event_types}"
        )
    return dict(event["payload"])


def _phone(value: Any, name: str) -> str | None:
    """``from`` is ``{phone_number}``, ``to`` a list of them; None when absent."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("phone_number")
    if value in (None, ""):
        return None
    return checked(value, f"payload.{name}.phone_number", provider=NAME, limit=PHONE_LENGTH)


def _required_phone(value: Any, name: str) -> str:
    phone = _phone(value, name)
    if phone is None:
        raise PayloadError(f"telnyx webhook: missing payload.{name}.phone_number")
    return phone


def is_inbound(request: WebhookRequest) -> bool:
    """Telnyx posts every event of a messaging profile to one URL; inbound messages are message.received."""
    data = request.json()
    event = data.get("data") if isinstance(data, dict) else None
    return isinstance(event, dict) and event.get("event_type") == "message.received"


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = _payload(request, "message.received")
    return InboundSms(
        provider=NAME,
        provider_message_id=require(p, "id", provider=NAME),
        from_phone=_required_phone(p.get("from"), "from"),
        to_phone=_required_phone(p.get("to"), "to"),
        body=message_text(p.get("text") or ""),
        received_at=request.received_at,
        raw=p,
    )


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = _payload(request, "message.sent", "message.finalized")
    to = p.get("to") or [{}]
    first = to[0] if isinstance(to, list) and to else to
    first = first if isinstance(first, dict) else {}
    raw_status = checked(
        first.get("status") or "sent", "payload.to.status", provider=NAME, limit=STATUS_LENGTH
    )
    errors = p.get("errors") or []
    error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = (
        None
        if error.get("code") is None
        else checked(error["code"], "payload.errors.code", provider=NAME, limit=CODE_LENGTH)
    )
    message = error.get("detail") or error.get("title")
    return StatusUpdate(
        provider=NAME,
        provider_message_id=require(p, "id", provider=NAME),
        status=_STATUSES.get(raw_status.lower(), raw_status.lower()),
        error_code=code,
        error_message=message_text(message) or None,
        opted_out=is_opt_out(ERRORS, code),
        raw=p,  # send.py
        recipient=_phone(first, "to"),
        sender=_phone(p.get("from"), "from"),
    )
