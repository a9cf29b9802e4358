"""Plivo: ``POST /v1/Account/{auth_id}/Message/`` (basic auth, JSON).

Plivo's message list does not return the text, so reconciliation matches recipient, sender and time
(``message_time__gte`` the hand-over): any outbound message to that number since then counts as sent.
That errs towards "already sent" — a missed message, never a duplicate. The list answers at most 20
records a page (``limit`` 1–20, https://www.plivo.com/docs/number-masking/api/pagination/), newest first,
with ``meta.next`` the next page (https://docs.plivo.com/docs/messaging/api/response): reconciliation
follows it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp
from yarl import URL

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, SendResult

# Plivo's send API answers errors by HTTP status (400 a parameter is missing or invalid, 401 authentication
# failed, 404, 405, 429 rate limited, 500 server error: https://www.plivo.com/docs/messaging/api/overview/
# and http_errors.from_response), with no error code of its own. An opted-out destination is accepted and
# then reported in the status callback (error code 200, webhook.py). The one case the HTTP status does not
# tell: once the balance runs out, "all send message API requests will fail with the error 'Insufficient
# Credit'" (https://support.plivo.com/support/solutions/articles/17000088423) — a configuration error.
INSUFFICIENT_CREDIT = "insufficient credit"


# Reconciliation reads at most this many pages of PAGE_SIZE records (the list allows 20 requests a minute,
# https://www.plivo.com/docs/sms/api/message/list-all-messages/): beyond them it cannot tell, and says so
# (a retry later) rather than guess "not sent" and send a duplicate.
PAGE_SIZE, MAX_PAGES = 20, 10


class PlivoSender:
    name = "plivo"
    # Seconds before reconciling after an unknown outcome (base.Sender.reconcile_after): the list shows
    # Message Detail Records, which Plivo does not promise to show the moment a message is accepted.
    reconcile_after = 60.0

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        base_url: str,
        reconcile_after: float | None = None,
    ) -> None:
        if reconcile_after is not None:
            self.reconcile_after = reconcile_after
        if not auth_id or not auth_token:
            raise ValueError("plivo needs OPTLINE_PLIVO_AUTH_ID and OPTLINE_PLIVO_AUTH_TOKEN")
        self._secrets = [auth_token]
        self._url = f"{base_url.rstrip('/')}/v1/Account/{auth_id}/Message/"
        self._headers = {"Authorization": aiohttp.encode_basic_auth(auth_id, auth_token)}

    async def send(self, http: aiohttp.ClientSession, sms: OutboundSms) -> SendResult:
        payload = {"src": (sms.from_ or "").lstrip("+"), "dst": sms.to.lstrip("+"), "text": sms.body}
        if sms.status_callback_url:
            payload.update(url=sms.status_callback_url, method="POST")
        response = await http_errors.request(
            http, self.name, self._secrets, "POST", self._url, json=payload, headers=self._headers
        )
        data = response.json()
        uuids = data.get("message_uuid")
        if response.status in (200, 202) and isinstance(uuids, list) and uuids:
            return SendResult(str(uuids[0]), "queued")
        code = str(data["error_code"]) if data.get("error_code") is not None else None
        error = str(data.get("error") or response.text[:200])
        if INSUFFICIENT_CREDIT in error.lower():
            raise ProviderError(ErrorKind.BAD_CONFIG, f"plivo HTTP {response.status}: {error}", code="900")
        raise http_errors.from_response(self.name, response, code, error, self._secrets)

    async def find_sent(self, http: aiohttp.ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        params: dict[str, str] | None = {
            "message_direction": "outbound",
            "limit": str(PAGE_SIZE),
            "message_time__gte": (since - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
        }
        url: str | None = self._url
        to, sender = sms.to.lstrip("+"), (sms.from_ or "").lstrip("+")
        for _ in range(MAX_PAGES):
            if url is None:
                return None
            response = await http_errors.request(
                http, self.name, self._secrets, "GET", url, params=params, headers=self._headers
            )
            if response.status != 200:
                raise http_errors.from_response(self.name, response, None, response.text[:200], self._secrets)
            data = response.json()
            for item in data.get("objects") or []:
                if item.get("to_number") == to and (not sender or item.get("from_number") == sender):
                    return str(item["message_uuid"])
            meta = data.get("meta")
            nxt = meta.get("next") if isinstance(meta, dict) else None
            url, params = (str(URL(self._url).join(URL(str(nxt)))), None) if nxt else (None, None)
        if url is None:
            return None
        raise ProviderError(
            ErrorKind.RETRY,
            f"plivo reconciliation: more than {MAX_PAGES * PAGE_SIZE} messages since the hand-over; "
            "cannot tell whether it was sent",
            code="reconcile",
        )
