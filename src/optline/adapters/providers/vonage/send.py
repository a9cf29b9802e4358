"""Vonage (Nexmo) SMS API: ``POST /sms/json`` (form; credentials in the body).

Vonage answers 200 with a per-message ``status``; non-zero is an error code. Reconciliation uses the
search API (``GET /search/messages?date=…&to=…``) and matches the body.
"""

from __future__ import annotations

from datetime import datetime

import httpx

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import OPTED_OUT_CODES, ErrorKind, OutboundSms, ProviderError, SendResult
from optline.domain.segments import is_gsm7

_RETRY = {"1", "5"}  # throttled, internal error
_CONFIG = {"4", "8", "14", "29"}  # invalid credentials, account barred, signature, non-whitelisted


class VonageSender:
    name = "vonage"

    def __init__(
        self, api_key: str, api_secret: str, base_url: str, client: httpx.Client | None = None
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("vonage needs OPTLINE_VONAGE_API_KEY and OPTLINE_VONAGE_API_SECRET")
        self._key, self._secret, self._secrets = api_key, api_secret, [api_secret]
        self._base = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=http_errors.DEFAULT_TIMEOUT)

    def send(self, sms: OutboundSms) -> SendResult:
        form = {"api_key": self._key, "api_secret": self._secret, "to": sms.to.lstrip("+"),
                "from": (sms.from_ or "").lstrip("+"), "text": sms.body, "client-ref": sms.idempotency_key[:40]}  # fmt: skip
        if not is_gsm7(sms.body):
            form["type"] = "unicode"
        if sms.status_callback_url:
            form["callback"] = sms.status_callback_url
        try:
            response = self._client.post(f"{self._base}/sms/json", data=form)
        except httpx.TransportError as exc:
            raise http_errors.from_transport(self.name, exc, self._secrets) from None
        data = http_errors.json_or_empty(response)
        parts = data.get("messages") if isinstance(data.get("messages"), list) else None
        if response.status_code != 200 or not parts:
            raise http_errors.from_response(self.name, response, None, response.text[:200], self._secrets)
        first = parts[0]
        status = str(first.get("status"))
        if status == "0":
            return SendResult(str(first["message-id"]), "sent")
        text = f"vonage status {status}: {first.get('error-text', '')}"
        if status in OPTED_OUT_CODES[self.name]:
            raise ProviderError(ErrorKind.OPTED_OUT, text, code=status)
        kind = (
            ErrorKind.RETRY
            if status in _RETRY
            else ErrorKind.BAD_CONFIG
            if status in _CONFIG
            else ErrorKind.BAD_REQUEST
        )
        raise ProviderError(kind, text, code=status)

    def find_sent(self, sms: OutboundSms, since: datetime) -> str | None:
        params = {"api_key": self._key, "api_secret": self._secret, "date": since.date().isoformat(),
                  "to": sms.to.lstrip("+")}  # fmt: skip
        try:
            response = self._client.get(f"{self._base}/search/messages", params=params)
        except httpx.TransportError as exc:
            raise http_errors.from_transport(self.name, exc, self._secrets) from None
        if response.status_code != 200:
            raise http_errors.from_response(self.name, response, None, response.text[:200], self._secrets)
        for item in http_errors.json_or_empty(response).get("items", []) or []:
            if item.get("body") == sms.body:
                return str(item["message-id"])
        return None
