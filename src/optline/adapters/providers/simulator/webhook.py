"""The local simulator's webhooks: the same shape as a real provider, so demos exercise the real path.

JSON bodies ``{"sid", "from", "to", "body"}`` (inbound) and ``{"sid", "status", "error_code"}`` (status),
signed with ``X-Simulator-Signature: hex HMAC-SHA256(OPTLINE_SECRET_KEY, body)``. Only the signed body is
read: never the query string, which the signature does not cover.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from optline.adapters.providers.base import InboundSms, StatusUpdate
from optline.adapters.providers.webhook_request import (
    CODE_LENGTH,
    JSON,
    PHONE_LENGTH,
    STATUS_LENGTH,
    SignatureError,
    WebhookRequest,
    message_text,
    optional,
    require,
)

NAME = "simulator"
HEADER = "x-simulator-signature"
OPTED_OUT_CODE = "opted_out"


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, str | None], secret: str) -> tuple[bytes, dict[str, str]]:
    """A signed request body and headers (for the simulator's web page, the CLI and tests)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return body, {"content-type": "application/json", HEADER: sign(body, secret)}


def verify(request: WebhookRequest, secret: str) -> None:
    request.require_media_type(NAME, JSON)
    sent = request.headers.get(HEADER, "")
    if not sent:
        raise SignatureError("simulator: missing X-Simulator-Signature header")
    if not hmac.compare_digest(sign(request.body, secret), sent):
        raise SignatureError("simulator: X-Simulator-Signature does not match")


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = request.json_params()
    return InboundSms(
        provider=NAME,
        provider_message_id=require(p, "sid", provider=NAME),
        from_phone=require(p, "from", provider=NAME, limit=PHONE_LENGTH),
        to_phone=require(p, "to", provider=NAME, limit=PHONE_LENGTH),
        body=message_text(p.get("body", "")),
        received_at=request.received_at,
        raw=p,
    )


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = request.json_params()
    code = optional(p, "error_code", provider=NAME, limit=CODE_LENGTH)
    return StatusUpdate(
        provider=NAME,
        provider_message_id=require(p, "sid", provider=NAME),
        status=require(p, "status", provider=NAME, limit=STATUS_LENGTH),
        error_code=code,
        opted_out=code == OPTED_OUT_CODE,
        raw=p,
    )
