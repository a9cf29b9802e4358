"""Vonage (Nexmo) SMS API: ``POST /sms/json`` (form; credentials in the body).

Vonage answers 200 with a per-message ``status``; non-zero is an error code. Reconciliation uses the
search API (``GET /search/messages?date=…&to=…``, https://developer.vonage.com/en/api/developer/messages)
and matches the body, on each UTC day from the hand-over to now (a search covers one date).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import CodeTable, ErrorKind, OutboundSms, ProviderError, SendResult
from optline.domain.segments import is_gsm7

_BAD_REQUEST, _BAD_CONFIG, _RETRY = ErrorKind.BAD_REQUEST, ErrorKind.BAD_CONFIG, ErrorKind.RETRY

# The send response's per-message ``status`` (HTTP 200 either way), from
# https://developer.vonage.com/en/api-errors/sms (also https://developer.vonage.com/messaging/sms/guides/troubleshooting-sms).
# None of them means "opted out": a number that opted out is accepted (status 0) and then reported in the
# delivery receipt with err-code 9 (webhook.py). Status 9 here is the account's credit running out.
SEND_ERRORS: CodeTable = {
    "1": (_RETRY, "Throttled: sending faster than the account limit"),
    "2": (_BAD_REQUEST, "Missing parameters"),
    "3": (_BAD_REQUEST, "Invalid parameters"),
    "4": (_BAD_CONFIG, "Invalid credentials: API key and/or secret incorrect, invalid or disabled"),
    "5": (_RETRY, "Internal error"),
    "6": (_BAD_REQUEST, "Invalid message (e.g. an unrecognised number prefix)"),
    "7": (_BAD_REQUEST, "Number barred: the destination is blacklisted and may not receive messages"),
    "8": (_BAD_CONFIG, "Partner account barred: the Vonage account has been suspended"),
    "9": (_BAD_CONFIG, "Partner quota violation: not enough credit to send the message (top up)"),
    "10": (_RETRY, "Too many existing binds"),
    "11": (_BAD_CONFIG, "Account not enabled for HTTP (the SMS API)"),
    "12": (_BAD_REQUEST, "Message too long"),
    "14": (_BAD_CONFIG, "Invalid signature"),
    "15": (_BAD_CONFIG, "Invalid sender address"),
    "22": (_BAD_REQUEST, "Invalid network code"),
    "23": (_BAD_CONFIG, "Invalid callback URL"),
    "29": (_BAD_CONFIG, "Non-whitelisted destination (account in trial mode)"),
    "32": (_BAD_CONFIG, "Signature and API secret disallowed"),
    "33": (_BAD_REQUEST, "Number de-activated"),
}


class VonageSender:
    name = "vonage"
    # Seconds before reconciling after an unknown outcome (base.Sender.reconcile_after): Vonage's records
    # appear "a few minutes" after the message (https://developer.vonage.com/en/dashboard/monitor/logs/messages-logs).
    reconcile_after = 300.0

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        base_url: str,
        reconcile_after: float | None = None,
    ) -> None:
        if reconcile_after is not None:
            self.reconcile_after = reconcile_after
        if not api_key or not api_secret:
            raise ValueError("vonage needs OPTLINE_VONAGE_API_KEY and OPTLINE_VONAGE_API_SECRET")
        self._key, self._secret, self._secrets = api_key, api_secret, [api_secret]
        self._base = base_url.rstrip("/")

    async def send(self, http: aiohttp.ClientSession, sms: OutboundSms) -> SendResult:
        form = {
            "api_key": self._key,
            "api_secret": self._secret,
            "to": sms.to.lstrip("+"),
            "from": (sms.from_ or "").lstrip("+"),
            "text": sms.body,
            "client-ref": sms.idempotency_key[:40],
        }
        if not is_gsm7(sms.body):
            form["type"] = "unicode"
        if sms.status_callback_url:
            form["callback"] = sms.status_callback_url
        response = await http_errors.request(
            http, self.name, self._secrets, "POST", f"{self._base}/sms/json", form=form
        )
        data = response.json()
        parts = data.get("messages") if isinstance(data.get("messages"), list) else None
        if response.status != 200 or not parts:
            raise http_errors.from_response(self.name, response, None, response.text[:200], self._secrets)
        first = parts[0]
        status = str(first.get("status"))
        if status == "0":
            return SendResult(str(first["message-id"]), "sent")
        kind, meaning = SEND_ERRORS.get(status, (_BAD_REQUEST, "undocumented status"))
        after = http_errors.retry_after(response.headers) if kind is _RETRY else None
        raise ProviderError(
            kind,
            f"vonage status {status} ({meaning}): {first.get('error-text', '')}",
            code=status,
            retry_after=after,
        )

    async def find_sent(self, http: aiohttp.ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        day, today = since.astimezone(UTC).date(), datetime.now(UTC).date()
        while day <= today:
            found = await self._search(http, sms, day.isoformat())
            if found:
                return found
            day += timedelta(days=1)
        return None

    async def _search(self, http: aiohttp.ClientSession, sms: OutboundSms, date: str) -> str | None:
        params = {"api_key": self._key, "api_secret": self._secret, "date": date, "to": sms.to.lstrip("+")}
        response = await http_errors.request(
            http, self.name, self._secrets, "GET", f"{self._base}/search/messages", params=params
        )
        if response.status != 200:
            raise http_errors.from_response(self.name, response, None, response.text[:200], self._secrets)
        for item in response.json().get("items", []) or []:
            if item.get("body") == sms.body:
                return str(item["message-id"])
        return None
