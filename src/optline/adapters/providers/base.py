"""What every SMS provider module offers, and the small shared set of provider errors.

Layout (after nyaruka/courier): one package per provider with the same file names —
``<provider>/send.py`` (send a message, look a message up for reconciliation) and
``<provider>/webhook.py`` (verify a signature, parse an inbound message, parse a status callback).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import ClientSession


class ErrorKind(StrEnum):
    RETRY = "retry"  # transient: 5xx, timeouts, 429 — try again later (Retry-After when given)
    BAD_REQUEST = "bad_request"  # this message can never be sent as it is (invalid number, body too long)
    BAD_CONFIG = "bad_config"  # our credentials or sender are wrong: stop sending, tell the operator
    OPTED_OUT = "opted_out"  # the recipient opted out at the provider/carrier: becomes a ledger event


# A provider's error codes: code -> (kind, what the provider's documentation says it means). Each provider
# module tables its send errors (send.py) and receipt codes (webhook.py) with the page they come from.
# Where a code comes from matters: Vonage's 9 is "out of credit" in a send response and "opted out" in a
# delivery receipt (DESIGN.md, Providers).
CodeTable = Mapping[str, tuple[ErrorKind, str]]


def kind_of(table: CodeTable, code: str | None) -> ErrorKind | None:
    entry = table.get(code or "")
    return entry[0] if entry else None


def is_opt_out(table: CodeTable, code: str | None) -> bool:
    """Whether ``code`` means "the recipient opted out" in this table (it becomes a ledger event)."""
    return kind_of(table, code) is ErrorKind.OPTED_OUT


class ProviderError(Exception):
    """``outcome_unknown``: the provider may have accepted the message all the same (no answer, or a 5xx
    answer): the retry must reconcile first, and not before the provider's ``reconcile_after``."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind, self.code, self.message, self.retry_after = kind, code, message, retry_after
        self.outcome_unknown = outcome_unknown

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (errors may cross process boundaries): rebuilt with its keyword fields.
        return _provider_error, (self.kind, self.message, self.code, self.retry_after, self.outcome_unknown)


def _provider_error(
    kind: ErrorKind, message: str, code: str | None, retry_after: float | None, outcome_unknown: bool = False
) -> ProviderError:
    return ProviderError(kind, message, code=code, retry_after=retry_after, outcome_unknown=outcome_unknown)


@dataclass(frozen=True)
class OutboundSms:
    to: str
    from_: str | None
    body: str
    idempotency_key: str
    status_callback_url: str | None = None


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: str = "sent"


@dataclass(frozen=True)
class InboundSms:
    provider: str
    provider_message_id: str
    from_phone: str
    to_phone: str
    body: str
    received_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    provider: str
    provider_message_id: str
    status: str  # sent, delivered, undelivered, failed
    error_code: str | None = None
    error_message: str | None = None
    opted_out: bool = False  # the provider says the recipient opted out (error code or OptOutType)
    raw: Mapping[str, Any] = field(default_factory=dict)
    # The numbers on the receipt (E.164 where the provider gives a number): an opt-out receipt whose message
    # is not known is still recorded for them (services/receipts.py). None where the receipt has none.
    recipient: str | None = None
    sender: str | None = None


class Sender(Protocol):
    name: str
    # Seconds to wait after a call whose outcome is unknown (a timeout, a lost answer, a 5xx) before
    # reconciling: a message the provider accepted can take a while to show in its list or search answers,
    # and looking too early finds nothing and sends it twice. 0 where a resend is itself safe (an
    # idempotency key) or the lookup is exact.
    reconcile_after: float

    # Both run on the hand-over's event loop (services/handover.py) and use its session ``http``
    # (adapters/providers/http_errors.py says why aiohttp); http_errors.run calls one from synchronous code.
    async def send(self, http: ClientSession, sms: OutboundSms) -> SendResult:
        """Hand one message to the provider; raise ProviderError on failure."""

    async def find_sent(self, http: ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        """Reconciliation after a timeout or crash: the provider id of this message if it was accepted."""


def reconcile_delay(sender: Sender, error: ProviderError) -> float:
    """The least wait before retrying after ``error``: the sender's ``reconcile_after`` when the provider may
    have accepted the message (the retry reconciles first), otherwise 0."""
    return float(getattr(sender, "reconcile_after", 0.0)) if error.outcome_unknown else 0.0


def redact(text: str, secrets: list[str]) -> str:
    """Remove secrets from anything that may reach a log or an error message."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
