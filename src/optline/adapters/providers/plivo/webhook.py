"""Plivo webhooks: ``X-Plivo-Signature-V3`` (+ ``X-Plivo-Signature-V3-Nonce``), inbound SMS, status callbacks.

V3 signs ``<url>?<sorted query>.<sorted name+value POST params>.<nonce>`` with HMAC-SHA256 of the auth
token, base64; the header may list several signatures separated by commas (token rotation).

Plivo posts its message webhooks as application/x-www-form-urlencoded parameters (From, To, Type, Text,
MessageUUID: https://www.plivo.com/docs/messaging/xml/request). Nothing else is accepted: a JSON body has no
form fields, so a signature over the URL alone (a captured GET-style callback) would "cover" any JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from optline.adapters.providers.base import CodeTable, ErrorKind, InboundSms, StatusUpdate, is_opt_out
from optline.adapters.providers.webhook_request import (
    CODE_LENGTH,
    FORM,
    PHONE_LENGTH,
    STATUS_LENGTH,
    SignatureError,
    WebhookRequest,
    message_text,
    optional,
    require,
)

NAME = "plivo"
_STATUSES = {
    "queued": "sent", "sent": "sent", "delivered": "delivered", "undelivered": "undelivered",
    "failed": "failed", "rejected": "failed",
}  # fmt: skip


def _base(url: str, query: dict[str, list[str]], has_post_params: bool) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    pairs: list[str] = []
    for name in sorted(query):
        pairs.extend(f"{name}={v}" for v in sorted(query[name]))
    qs = "&".join(pairs)
    if qs or has_post_params:
        base += "?" + qs
    if qs and has_post_params:
        base += "."
    return base


def signed_string(method: str, url: str, post: dict[str, str]) -> str:
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    if method.upper() == "GET":
        for name, value in post.items():
            query.setdefault(name, []).append(value)
        return _base(url, query, False)
    return _base(url, query, bool(post)) + "".join(f"{k}{post[k]}" for k in sorted(post))


def signature(auth_token: str, method: str, url: str, post: dict[str, str], nonce: str) -> str:
    data = f"{signed_string(method, url, post)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), data, hashlib.sha256).digest()).decode()


def verify(request: WebhookRequest, auth_token: str) -> None:
    request.require_media_type(NAME, FORM)  # before anything else: the signature covers form fields only
    if not auth_token:
        raise SignatureError("plivo: OPTLINE_PLIVO_AUTH_TOKEN is not set, cannot verify webhooks")
    sent = request.headers.get("x-plivo-signature-v3", "")
    nonce = request.headers.get("x-plivo-signature-v3-nonce", "")
    if not sent or not nonce:
        raise SignatureError("plivo: missing X-Plivo-Signature-V3 or X-Plivo-Signature-V3-Nonce header")
    if request.method.upper() != "POST":
        raise SignatureError("plivo: webhooks are POSTed; refusing a " + request.method)
    expected = signature(auth_token, "POST", request.url, dict(request.form()), nonce)
    if not any(hmac.compare_digest(expected, s.strip()) for s in sent.split(",")):
        raise SignatureError("plivo: X-Plivo-Signature-V3 does not match (check OPTLINE_PUBLIC_URL)")


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = request.query_and_form()  # exactly what verify() signed: the URL's query and the form
    return InboundSms(
        provider=NAME,
        provider_message_id=require(p, "MessageUUID", provider=NAME),
        from_phone=require(p, "From", provider=NAME, limit=PHONE_LENGTH),
        to_phone=require(p, "To", provider=NAME, limit=PHONE_LENGTH),
        body=message_text(p.get("Text", "")),
        received_at=request.received_at,
        raw=p,
    )


# Status callback ``ErrorCode``s, from https://www.plivo.com/docs/messaging/troubleshooting/error-codes (and
# 900, https://support.plivo.com/support/solutions/articles/17000088423): 200 is the destination's opt-out.
RECEIPT_ERRORS: CodeTable = {
    "10": (ErrorKind.BAD_REQUEST, "Invalid message"),
    "20": (ErrorKind.RETRY, "Network error"),
    "30": (ErrorKind.BAD_REQUEST, "Spam detected"),
    "40": (ErrorKind.BAD_CONFIG, "Invalid source number"),
    "50": (ErrorKind.BAD_REQUEST, "Invalid destination number"),
    "200": (ErrorKind.OPTED_OUT, "Destination number has opted out"),
    "900": (ErrorKind.BAD_CONFIG, "Insufficient credit"),
}


def _number(value: str | None) -> str | None:
    """Plivo writes numbers in international format without the plus; a short code as is."""
    if not value:
        return None
    return f"+{value}" if value.isdigit() and len(value) > 8 else value


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = request.query_and_form()
    code = optional(p, "ErrorCode", provider=NAME, limit=CODE_LENGTH)
    if code == "000":
        code = None
    raw_status = require(p, "Status", provider=NAME, limit=STATUS_LENGTH).lower()
    return StatusUpdate(
        provider=NAME,
        provider_message_id=require(p, "MessageUUID", provider=NAME),
        status=_STATUSES.get(raw_status, raw_status),
        error_code=code,
        opted_out=is_opt_out(RECEIPT_ERRORS, code),
        raw=p,
        recipient=_number(optional(p, "To", provider=NAME, limit=PHONE_LENGTH - 1)),
        sender=_number(optional(p, "From", provider=NAME, limit=PHONE_LENGTH - 1)),
    )
