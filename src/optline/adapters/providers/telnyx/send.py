"""Telnyx Messaging: ``POST /v2/messages`` (Bearer key, JSON, ``Idempotency-Key`` header).

Telnyx deduplicates requests by ``Idempotency-Key``, so resending with the same key after a timeout or a
crash *is* the reconciliation: ``find_sent`` answers None and dispatch resends; Telnyx returns the message
it already accepted instead of sending a second one — provided the body is byte-for-byte the same: another
body with a key already used answers 422 (https://developers.telnyx.com/docs/development/api-fundamentals/idempotency).
"""

from __future__ import annotations

from datetime import datetime

import aiohttp

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import CodeTable, ErrorKind, OutboundSms, SendResult

_OPTED_OUT, _BAD_REQUEST, _BAD_CONFIG, _RETRY = (
    ErrorKind.OPTED_OUT, ErrorKind.BAD_REQUEST, ErrorKind.BAD_CONFIG, ErrorKind.RETRY,
)  # fmt: skip

# Messaging error codes, from https://developers.telnyx.com/docs/messaging/messages/error-codes/index
# (delivery errors 40xxx: in message.finalized webhooks, and some answered at send time, e.g. 40300 with
# HTTP 409: https://developers.telnyx.com/api/errors/40300) and the API request errors 10xxx
# (https://support.telnyx.com/en/articles/6505121-telnyx-messaging-error-codes). One table for the send
# answer and the status callback (webhook.py): Telnyx gives a code one meaning wherever it appears.
ERRORS: CodeTable = {
    "40300": (_OPTED_OUT, "Blocked due to STOP message: the recipient replied STOP to this number"),
    "40001": (_BAD_REQUEST, "Not routable: landline or non-routable destination"),
    "40002": (_RETRY, "Blocked as spam (temporary)"),
    "40003": (_BAD_CONFIG, "Blocked as spam (permanent): the sending number is blocked by the carrier"),
    "40004": (_RETRY, "Rejected by destination"),
    "40005": (_RETRY, "Message expired"),
    "40006": (_RETRY, "Recipient unavailable"),
    "40008": (_BAD_REQUEST, "Undeliverable"),
    "40009": (_BAD_REQUEST, "Invalid message body"),
    "40011": (_RETRY, "Rate limit exceeded (upstream)"),
    "40012": (_BAD_REQUEST, "Invalid destination number"),
    "40013": (_BAD_CONFIG, "Invalid source number: the sending number is not active or messaging-enabled"),
    "40014": (_RETRY, "Expired in queue"),
    "40015": (_BAD_REQUEST, "Internal spam filter"),
    "10001": (_BAD_REQUEST, "Inactive phone number"),
    "10002": (_BAD_REQUEST, "Invalid phone number"),
    "10003": (_BAD_CONFIG, "Invalid URL (the status callback URL)"),
    "10004": (_BAD_REQUEST, "Missing required parameter"),
    "10005": (_BAD_CONFIG, "Resource not found (endpoint)"),
    "10006": (_BAD_CONFIG, "Invalid ID (messaging profile)"),
    "10007": (_RETRY, "Unexpected error"),
    "10008": (_RETRY, "Request timeout"),
    "10009": (_BAD_CONFIG, "Authentication failed: check the API key"),
    "10010": (_BAD_CONFIG, "Authorization failed"),
    "10011": (_RETRY, "Too many requests"),
    "10015": (_BAD_REQUEST, "Bad request"),
    "10016": (_BAD_REQUEST, "Phone number must be in +E.164 format"),
}


class TelnyxSender:
    name = "telnyx"
    # The resend with the same key is the reconciliation (module docstring): no wait is needed, but an
    # operator may set one (OPTLINE_RECONCILE_AFTER_SECONDS) to space out resends to a struggling API.
    reconcile_after = 0.0

    def __init__(
        self,
        api_key: str,
        base_url: str,
        messaging_profile_id: str = "",
        reconcile_after: float | None = None,
    ) -> None:
        if reconcile_after is not None:
            self.reconcile_after = reconcile_after
        if not api_key:
            raise ValueError("telnyx needs OPTLINE_TELNYX_API_KEY")
        self._secrets = [api_key]
        self._url = f"{base_url.rstrip('/')}/v2/messages"
        self._profile = messaging_profile_id
        self._auth = f"Bearer {api_key}"

    async def send(self, http: aiohttp.ClientSession, sms: OutboundSms) -> SendResult:
        payload = {"to": sms.to, "text": sms.body}
        if sms.from_:
            payload["from"] = sms.from_
        if self._profile:
            payload["messaging_profile_id"] = self._profile
        if sms.status_callback_url:
            payload["webhook_url"] = sms.status_callback_url
        headers = {"Authorization": self._auth, "Idempotency-Key": sms.idempotency_key}
        response = await http_errors.request(
            http, self.name, self._secrets, "POST", self._url, json=payload, headers=headers
        )
        data = response.json()
        body = data.get("data")
        if response.status in (200, 201, 202) and isinstance(body, dict) and body.get("id"):
            return SendResult(str(body["id"]), "queued")
        errors = data.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = str(first["code"]) if first.get("code") is not None else None
        message = str(first.get("detail") or first.get("title") or response.text[:200])
        raise http_errors.from_response(self.name, response, code, message, self._secrets, ERRORS)

    async def find_sent(self, http: aiohttp.ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        return None  # the Idempotency-Key makes a resend safe (module docstring)
