"""Telnyx Messaging: ``POST /v2/messages`` (Bearer key, JSON, ``Idempotency-Key`` header).

Telnyx deduplicates requests by ``Idempotency-Key``, so resending with the same key after a timeout or a
crash *is* the reconciliation: ``find_sent`` answers None and dispatch resends; Telnyx returns the message
it already accepted instead of sending a second one.
"""

from __future__ import annotations

from datetime import datetime

import httpx

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import OutboundSms, SendResult


class TelnyxSender:
    name = "telnyx"

    def __init__(self, api_key: str, base_url: str, messaging_profile_id: str = "",
                 client: httpx.Client | None = None) -> None:  # fmt: skip
        if not api_key:
            raise ValueError("telnyx needs OPTLINE_TELNYX_API_KEY")
        self._secrets = [api_key]
        self._url = f"{base_url.rstrip('/')}/v2/messages"
        self._profile = messaging_profile_id
        self._client = client or httpx.Client(
            headers={"Authorization": f"Bearer {api_key}"}, timeout=http_errors.DEFAULT_TIMEOUT
        )

    def send(self, sms: OutboundSms) -> SendResult:
        payload = {"to": sms.to, "text": sms.body}
        if sms.from_:
            payload["from"] = sms.from_
        if self._profile:
            payload["messaging_profile_id"] = self._profile
        if sms.status_callback_url:
            payload["webhook_url"] = sms.status_callback_url
        try:
            response = self._client.post(
                self._url, json=payload, headers={"Idempotency-Key": sms.idempotency_key}
            )
        except httpx.TransportError as exc:
            raise http_errors.from_transport(self.name, exc, self._secrets) from None
        data = http_errors.json_or_empty(response)
        body = data.get("data")
        if response.status_code in (200, 201, 202) and isinstance(body, dict) and body.get("id"):
            return SendResult(str(body["id"]), "queued")
        errors = data.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = str(first["code"]) if first.get("code") is not None else None
        message = str(first.get("detail") or first.get("title") or response.text[:200])
        raise http_errors.from_response(self.name, response, code, message, self._secrets)

    def find_sent(self, sms: OutboundSms, since: datetime) -> str | None:
        return None  # the Idempotency-Key makes a resend safe (module docstring)
