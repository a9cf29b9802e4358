"""Vonage (Nexmo) SMS API webhooks: inbound messages and delivery receipts, by GET or POST (form or JSON).

Signed webhooks carry ``sig`` and ``timestamp``. The signed string is ``&name=value`` for every parameter
but ``sig``, sorted by name, with ``&`` and ``=`` in values replaced by ``_``. ``md5hash`` mode: MD5 of that
string followed by the signature secret; ``md5``/``sha1``/``sha256``/``sha512``: HMAC with the secret.
Timestamps more than 5 minutes away are refused, so a captured request cannot be replayed.

Vonage sends the parameters in the query string of a GET, or in the body of a POST (form or JSON), per the
HTTP method set for the webhook (https://developer.vonage.com/en/messaging/sms/guides/inbound-sms). The
signed parameters are exactly the ones parsed: the query of a GET (with no body), the body of a POST.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from optline.adapters.providers.base import CodeTable, ErrorKind, InboundSms, StatusUpdate, is_opt_out
from optline.adapters.providers.webhook_request import (
    CODE_LENGTH,
    FORM,
    JSON,
    PHONE_LENGTH,
    STATUS_LENGTH,
    PayloadError,
    SignatureError,
    WebhookRequest,
    message_text,
    optional,
    require,
)

NAME = "vonage"
MAX_SKEW_SECONDS = 300
_STATUSES = {
    "accepted": "sent", "buffered": "sent", "delivered": "delivered", "expired": "undelivered",
    "failed": "failed", "rejected": "failed", "unknown": "undelivered",
}  # fmt: skip


def signed_string(params: dict[str, str]) -> str:
    parts = []
    for name in sorted(params):
        if name == "sig":
            continue
        value = str(params[name]).replace("&", "_").replace("=", "_")
        parts.append(f"&{name}={value}")
    return "".join(parts)


def signature(params: dict[str, str], secret: str, method: str) -> str:
    data = signed_string(params)
    if method == "md5hash":
        return hashlib.md5((data + secret).encode("utf-8")).hexdigest()
    return hmac.new(secret.encode("utf-8"), data.encode("utf-8"), getattr(hashlib, method)).hexdigest()


def _params(request: WebhookRequest) -> dict[str, str]:
    if request.method.upper() == "GET":
        if request.body:
            raise PayloadError("vonage webhook: a GET carries its parameters in the query, not a body")
        return dict(request.query)
    request.require_media_type(NAME, FORM, JSON)
    return request.json_params() if request.is_json else dict(request.form())


def verify(request: WebhookRequest, secret: str, method: str, now: datetime) -> None:
    if request.method.upper() != "GET":
        request.require_media_type(NAME, FORM, JSON)  # a header check before any parsing
    if not secret:
        raise SignatureError("vonage: OPTLINE_VONAGE_SIGNATURE_SECRET is not set, cannot verify webhooks")
    params = _params(request)
    sig = params.get("sig", "").lower()
    if not sig:
        raise SignatureError("vonage: missing sig parameter")
    try:
        stamp = int(params.get("timestamp", ""))
    except ValueError:
        raise SignatureError("vonage: missing or invalid timestamp parameter") from None
    if abs(now.timestamp() - stamp) > MAX_SKEW_SECONDS:
        raise SignatureError("vonage: timestamp is more than 5 minutes away (replayed request?)")
    if not hmac.compare_digest(signature(params, secret, method), sig):
        raise SignatureError("vonage: sig does not match")


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = _params(request)
    return InboundSms(
        provider=NAME,
        provider_message_id=require(p, "messageId", "message_uuid", provider=NAME),
        from_phone=require(p, "msisdn", provider=NAME, limit=PHONE_LENGTH),
        to_phone=require(p, "to", provider=NAME, limit=PHONE_LENGTH),
        body=message_text(p.get("text", "")),
        received_at=request.received_at,
        raw=p,
    )


# Delivery receipt ``err-code``s, from https://api.support.vonage.com/hc/en-us/articles/204014733 ; 9 is the
# recipient's opt-out ("user has requested not to receive messages from a specific service"), as
# https://developer.vonage.com/en/opt-out-assist/guides/messaging-opted-out-numbers confirms (status
# failed or rejected, err-code 9). Not the send response's status 9 (out of credit, send.py).
RECEIPT_ERRORS: CodeTable = {
    "1": (ErrorKind.BAD_REQUEST, "Unknown"),
    "2": (ErrorKind.RETRY, "Absent subscriber - temporary"),
    "3": (ErrorKind.BAD_REQUEST, "Absent subscriber - permanent"),
    "4": (ErrorKind.BAD_REQUEST, "Call barred by user"),
    "5": (ErrorKind.BAD_REQUEST, "Portability error"),
    "6": (ErrorKind.BAD_REQUEST, "Anti-spam rejection"),
    "7": (ErrorKind.RETRY, "Handset busy"),
    "8": (ErrorKind.RETRY, "Network error"),
    "9": (ErrorKind.OPTED_OUT, "Illegal number: the user asked not to receive messages from this service"),
    "10": (ErrorKind.BAD_REQUEST, "Illegal message"),
    "11": (ErrorKind.BAD_REQUEST, "Unroutable"),
    "12": (ErrorKind.BAD_REQUEST, "Destination unreachable"),
    "13": (ErrorKind.BAD_REQUEST, "Subscriber age restriction"),
    "14": (ErrorKind.BAD_REQUEST, "Number blocked by carrier"),
}


def _number(value: str | None) -> str | None:
    """Vonage writes numbers in international format without the plus; an alphanumeric sender as is."""
    if not value:
        return None
    return f"+{value}" if value.isdigit() and len(value) > 8 else value


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = _params(request)
    code = optional(p, "err-code", provider=NAME, limit=CODE_LENGTH)
    if code == "0":
        code = None
    raw_status = require(p, "status", provider=NAME, limit=STATUS_LENGTH).lower()
    return StatusUpdate(
        provider=NAME,
        provider_message_id=require(p, "messageId", provider=NAME),
        status=_STATUSES.get(raw_status, raw_status),
        error_code=code,
        opted_out=is_opt_out(RECEIPT_ERRORS, code),
        raw=p,
        # The DLR's msisdn is the recipient, its "to" our sender.
        recipient=_number(optional(p, "msisdn", provider=NAME, limit=PHONE_LENGTH - 1)),
        sender=_number(optional(p, "to", provider=NAME, limit=PHONE_LENGTH - 1)),
    )
