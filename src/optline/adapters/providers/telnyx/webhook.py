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
from optline.adapters.providers.webhook_request import JSON, PayloadError, SignatureError, WebhookRequest

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


def _payload(request: WebhookRequest, *event_types: str) -> dict[str, Any]:
    data = request.json()
    try:
        event = data["data"]
        payload = event["payload"]
    except (KeyError, TypeError):
        raise PayloadError("telnyx webhook: expected {data: {event_type, payload}}") from None
    if event.get("event_type") not in event_types:
        raise PayloadError(f"telnyx webhook: event_type {event.get('event_type')!r} is not {event_types}")
    return dict(payload)


def _phone(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else {}
    if isinstance(value, dict):
        value = value.get("phone_number")
    if not value:
        raise PayloadError("telnyx webhook: missing phone_number")
    return str(value)


def is_inbound(request: WebhookRequest) -> bool:
    """Telnyx posts every event of a messaging profile to one URL; inbound messages are message.received."""
    data = request.json()
    return isinstance(data, dict) and (data.get("data") or {}).get("event_type") == "message.received"


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = _payload(request, "message.received")
    if not p.get("id"):
        raise PayloadError("telnyx webhook: missing payload.id")
    return InboundSms(
        provider=NAME, provider_message_id=str(p["id"]), from_phone=_phone(p.get("from")),
        to_phone=_phone(p.get("to")), body=str(p.get("text") or ""), received_at=request.received_at, raw=p,
    )  # fmt: skip


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = _payload(request, "message.sent", "message.finalized")
    if not p.get("id"):
        raise PayloadError("telnyx webhook: missing payload.id")
    to = p.get("to") or [{}]
    raw_status = str((to[0] if isinstance(to, list) else to).get("status") or "sent").lower()
    errors = p.get("errors") or []
    code = str(errors[0].get("code")) if errors and errors[0].get("code") is not None else None
    message = (errors[0].get("detail") or errors[0].get("title")) if errors else None
    first = to[0] if isinstance(to, list) and to else to
    return StatusUpdate(
        provider=NAME, provider_message_id=str(p["id"]), status=_STATUSES.get(raw_status, raw_status),
        error_code=code, error_message=message, opted_out=is_opt_out(ERRORS, code), raw=p,  # codes: send.py
        recipient=(first or {}).get("phone_number") if isinstance(first, dict) else None,
        sender=(p.get("from") or {}).get("phone_number") if isinstance(p.get("from"), dict) else None,
    )  # fmt: skip
