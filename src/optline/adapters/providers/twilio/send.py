"""Twilio Programmable Messaging: ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (basic auth, form).

Twilio has no idempotency key: reconciliation lists the account's messages to the recipient (and from the
sender) and matches the body (``find_sent``). It uses no DateSent filter: a message Twilio accepted but has
not sent yet (queued, or accepted by a Messaging Service) has no date_sent and a DateSent filter hides it
(https://www.twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources). The list is
sorted by DateSent, newest first, but where messages without one fall is not documented, so reconciliation
reads every page (``next_page_uri``) rather than stop at the first older message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from optline.adapters.providers import http_errors
from optline.adapters.providers.base import CodeTable, ErrorKind, OutboundSms, ProviderError, SendResult

_OPTED_OUT, _BAD_REQUEST, _BAD_CONFIG, _RETRY = (
    ErrorKind.OPTED_OUT, ErrorKind.BAD_REQUEST, ErrorKind.BAD_CONFIG, ErrorKind.RETRY,
)  # fmt: skip

# Errors the Messages API answers a send with (JSON ``code``). One documentation page per code:
# https://www.twilio.com/docs/api/errors/<code>. Codes not listed fall back on the HTTP status
# (http_errors.from_response: 429 and 5xx retry, 401/403 configuration, other 4xx bad request).
SEND_ERRORS: CodeTable = {
    "21610": (_OPTED_OUT, "Attempt to send to unsubscribed recipient (the person replied STOP)"),
    "20003": (_BAD_CONFIG, "Authentication error: check the account SID and auth token"),
    "20429": (_RETRY, "Too many requests"),
    "21211": (_BAD_REQUEST, "Invalid 'To' phone number"),
    "21408": (_BAD_CONFIG, "Permission to send an SMS has not been enabled for the region"),
    "21606": (
        _BAD_CONFIG,
        "The 'From' number is not a valid, message-capable Twilio number for this destination",
    ),
    "21612": (_BAD_REQUEST, "The 'To' number is not currently reachable via SMS"),
    "21614": (_BAD_REQUEST, "'To' number is not a valid mobile number"),
}


# Reconciliation reads at most this many pages of PAGE_SIZE messages from the sender to the recipient:
# beyond that it cannot tell, and says so (a retry later) rather than guess "not sent" and send twice.
PAGE_SIZE, MAX_PAGES = 100, 20
_SECOND = timedelta(seconds=1)  # date_created has whole seconds


class TwilioSender:
    name = "twilio"
    # Seconds before reconciling after an unknown outcome (base.Sender.reconcile_after): Twilio does not
    # promise that a message it just created is in the list answer at once.
    reconcile_after = 30.0

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str,
        messaging_service_sid: str = "",
        reconcile_after: float | None = None,
    ) -> None:
        if reconcile_after is not None:
            self.reconcile_after = reconcile_after
        if not account_sid or not auth_token:
            raise ValueError("twilio needs OPTLINE_TWILIO_ACCOUNT_SID and OPTLINE_TWILIO_AUTH_TOKEN")
        self._secrets = [auth_token]
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._service = messaging_service_sid
        self._headers = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}

    async def send(self, http: aiohttp.ClientSession, sms: OutboundSms) -> SendResult:
        form = {"To": sms.to, "Body": sms.body}
        if sms.from_:
            form["From"] = sms.from_
        elif self._service:
            form["MessagingServiceSid"] = self._service
        if sms.status_callback_url:
            form["StatusCallback"] = sms.status_callback_url
        response = await http_errors.request(
            http, self.name, self._secrets, "POST", self._url, form=form, headers=self._headers
        )
        data = response.json()
        if response.status in (200, 201) and data.get("sid"):
            return SendResult(str(data["sid"]), str(data.get("status") or "queued"))
        code = str(data["code"]) if data.get("code") is not None else None
        raise http_errors.from_response(
            self.name,
            response,
            code,
            str(data.get("message") or response.text[:200]),
            self._secrets,
            SEND_ERRORS,
        )

    async def find_sent(self, http: aiohttp.ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        params = {"To": sms.to, "PageSize": str(PAGE_SIZE)}  # no DateSent: it hides queued messages
        if sms.from_:
            params["From"] = sms.from_
        url: str | None = self._url
        for _ in range(MAX_PAGES):
            if url is None:
                return None
            response = await http_errors.request(
                http,
                self.name,
                self._secrets,
                "GET",
                url,
                params=params if url == self._url else None,
                headers=self._headers,
            )
            data = response.json()
            if response.status != 200:
                code = str(data["code"]) if data.get("code") is not None else None
                raise http_errors.from_response(
                    self.name, response, code, str(data.get("message") or ""), self._secrets, SEND_ERRORS
                )
            for item in data.get("messages") or []:
                if (
                    item.get("to") == sms.to
                    and item.get("body") == sms.body
                    and _created(item) >= since - _SECOND
                ):
                    return str(item["sid"])
            nxt = data.get("next_page_uri")
            url = str(URL(self._url).join(URL(str(nxt)))) if nxt else None
        if url is None:
            return None
        raise ProviderError(
            ErrorKind.RETRY,
            f"twilio reconciliation: more than {MAX_PAGES * PAGE_SIZE} messages "
            f"to this recipient; cannot tell whether it was sent",
            code="reconcile",
        )


def _created(item: dict[str, object]) -> datetime:
    """The message's date_created (RFC 2822); a missing or unreadable one counts as recent (a match)."""
    try:
        return parsedate_to_datetime(str(item["date_created"]))
    except (KeyError, TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
