"""Twilio webhooks: ``X-Twilio-Signature`` (HMAC-SHA1 of the full URL + sorted params, base64), inbound SMS
and status callbacks.

JSON-bodied webhooks carry ``bodySHA256`` (hex SHA-256 of the raw body) in the query string; the signature
then covers the URL alone. Twilio signs sometimes with and sometimes without the default port, so both are
accepted (as Twilio's own ``RequestValidator`` does). Messaging webhooks are form posts
(https://www.twilio.com/docs/messaging/guides/webhook-request); any other body type is refused unread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit, urlunsplit

from optline.adapters.providers.base import CodeTable, ErrorKind, InboundSms, StatusUpdate, is_opt_out
from optline.adapters.providers.webhook_request import (
    CODE_LENGTH,
    FORM,
    JSON,
    PHONE_LENGTH,
    STATUS_LENGTH,
    SignatureError,
    WebhookRequest,
    message_text,
    optional,
    require,
)

NAME = "twilio"
_STATUSES = {
    "accepted": "sent", "queued": "sent", "sending": "sent", "sent": "sent", "scheduled": "sent",
    "delivered": "delivered", "read": "delivered", "undelivered": "undelivered", "failed": "failed",
    "canceled": "failed",
}  # fmt: skip


def _signature(token: bytes, url: str, params: list[tuple[str, str]]) -> str:
    # Twilio's order (its SDK's compute_signature): names sorted, each name's distinct values sorted. One sort
    # of the distinct pairs gives it in n log n; a pass over every pair per name was quadratic in a forged
    # form's field count, before its signature was known to be wrong.
    data = url + "".join(name + value for name, value in sorted(set(params)))
    return base64.b64encode(hmac.new(token, data.encode("utf-8"), hashlib.sha1).digest()).decode()


def _url_variants(url: str) -> set[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    with_port = parts._replace(netloc=f"{userinfo}{host}:{port}")
    without_port = parts._replace(netloc=f"{userinfo}{host}")
    return {url, urlunsplit(with_port), urlunsplit(without_port)}


def verify(request: WebhookRequest, auth_token: str) -> None:
    """Raise SignatureError unless the request was signed with ``auth_token``."""
    request.require_media_type(NAME, FORM, JSON)
    signature = request.headers.get("x-twilio-signature", "")
    if not auth_token:
        raise SignatureError("twilio: OPTLINE_TWILIO_AUTH_TOKEN is not set, cannot verify webhooks")
    if not signature:
        raise SignatureError("twilio: missing X-Twilio-Signature header")
    token = auth_token.encode("utf-8")
    # (A messaging webhook's URL has no query: nothing to parse then.)
    body_hash = parse_qs(urlsplit(request.url).query).get("bodySHA256") if "?" in request.url else None
    params: list[tuple[str, str]] = []
    if request.is_json or body_hash:
        # The raw body is covered by its hash, which is in the signed URL.
        expected = hashlib.sha256(request.body).hexdigest()
        if not body_hash or not hmac.compare_digest(expected, body_hash[0]):
            raise SignatureError("twilio: bodySHA256 does not match the request body")
    else:
        params = request.form()
    if hmac.compare_digest(_signature(token, request.url, params), signature):
        return  # the URL as configured: the common case, one HMAC
    for url in _url_variants(request.url) - {request.url}:
        if hmac.compare_digest(_signature(token, url, params), signature):
            return
    raise SignatureError("twilio: X-Twilio-Signature does not match (check OPTLINE_PUBLIC_URL)")


def _params(request: WebhookRequest) -> dict[str, str]:
    """The query (in the signed URL) and the body, read the way verify() covered it."""
    return {**dict(request.query), **request.json_params()} if request.is_json else request.query_and_form()


def parse_inbound(request: WebhookRequest) -> InboundSms:
    p = _params(request)
    return InboundSms(
        provider=NAME,
        provider_message_id=require(p, "MessageSid", "SmsSid", provider=NAME),
        from_phone=require(p, "From", provider=NAME, limit=PHONE_LENGTH),
        to_phone=require(p, "To", provider=NAME, limit=PHONE_LENGTH),
        body=message_text(p.get("Body", "")),
        received_at=request.received_at,
        raw=p,
    )


def provider_opt_out(sms: InboundSms) -> str | None:
    """Twilio Advanced Opt-Out tells us what it did with the message: STOP, START or HELP."""
    value = str(sms.raw.get("OptOutType", "")).strip().upper()
    return value or None


# ``ErrorCode`` of a status callback (https://www.twilio.com/docs/api/errors/<code>, one page per code). Only
# 21610 says the person opted out; 30004 "Message blocked" names several causes (blocked by the carrier,
# the handset, a block list), so it changes no consent.
RECEIPT_ERRORS: CodeTable = {
    "21610": (ErrorKind.OPTED_OUT, "Attempt to send to unsubscribed recipient"),
    "30003": (ErrorKind.BAD_REQUEST, "Unreachable destination handset"),
    "30004": (ErrorKind.BAD_REQUEST, "Message blocked"),
    "30005": (ErrorKind.BAD_REQUEST, "Unknown destination handset"),
    "30006": (ErrorKind.BAD_REQUEST, "Landline or unreachable carrier"),
    "30007": (ErrorKind.BAD_REQUEST, "Message filtered (carrier violation)"),
    "30008": (ErrorKind.RETRY, "Unknown error"),
}


def parse_status(request: WebhookRequest) -> StatusUpdate:
    p = _params(request)
    raw_status = require(p, "MessageStatus", "SmsStatus", provider=NAME, limit=STATUS_LENGTH).lower()
    code = optional(p, "ErrorCode", provider=NAME, limit=CODE_LENGTH)
    return StatusUpdate(
        provider=NAME,
        provider_message_id=require(p, "MessageSid", "SmsSid", provider=NAME),
        status=_STATUSES.get(raw_status, raw_status),
        error_code=code,
        error_message=message_text(p.get("ErrorMessage")) or None,
        opted_out=is_opt_out(RECEIPT_ERRORS, code),
        raw=p,
        recipient=optional(p, "To", provider=NAME, limit=PHONE_LENGTH),  # E.164, as sent
        sender=optional(p, "From", provider=NAME, limit=PHONE_LENGTH),
    )
