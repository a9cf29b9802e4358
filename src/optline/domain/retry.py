"""What becomes of a message whose provider call failed: the retry policy, pure (no I/O, no clock).

The provider modules map each answer onto a shared ``ErrorKind`` (adapters/providers/base.py); this decides
what dispatch does with it. Four outcomes:

- **retry later** (timeouts, 5xx): back to the queue after an exponential backoff, or the provider's
  Retry-After if longer, until ``max_attempts`` calls were made; then it fails for good.
- **throttled** (HTTP 429 and the providers' "too many requests" / "queue full" codes): the message did not
  go out and nothing is wrong with it; the *sender* is paused for what the provider asked (every worker
  honours it, services/sender_limits.py) and the message goes back to the queue without spending an attempt.
- **configuration** (bad credentials, From not owned, region not enabled, out of credit): every message
  of the account would fail the same way; the campaign is paused with the reason for the operator, and the
  message goes back to the queue without spending an attempt. A reply (no campaign) waits ``config_pause``.
- **opted out at the provider**: suppressed, and a ledger event; **bad request**: fails for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Error codes that mean "slow down", whatever HTTP status carried them. Twilio 20429 "Too many requests"
# (https://www.twilio.com/docs/api/errors/20429) and 21611 "This 'From' number has exceeded the maximum
# number of queued messages" (https://www.twilio.com/docs/api/errors/21611); "429": the HTTP status itself
# (adapters/providers/http_errors.py uses it as the code when the provider gives none); Vonage SMS API
# status 1 "Throttled" (https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms).
THROTTLE_CODES = frozenset({"429", "20429", "21611", "1"})
# A throttle without Retry-After pauses its sender this long (seconds).
DEFAULT_THROTTLE_PAUSE = 1.0


class Verdict(StrEnum):
    RETRY = "retry"  # back to the queue after ``delay``, one attempt spent
    THROTTLED = "throttled"  # back to the queue after ``delay``; pause the sender for ``delay``
    CONFIG = "config"  # back to the queue; pause the campaign (a reply: wait ``delay``)
    OPTED_OUT = "opted_out"  # suppressed; a ledger event
    FAIL = "fail"  # failed for good


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), capped at backoff_max
    backoff_max: float = 3600.0
    config_pause: float = 600.0  # how long a reply waits after a configuration error


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float | None  # seconds before the message may be claimed again (None: it is finished)
    reason: str


def decide(
    kind: str, code: str | None, attempts: int, retry_after: float | None, policy: RetryPolicy
) -> Decision:
    """The fate of a message whose ``attempts``-th call failed with an error of ``kind`` (ErrorKind value)."""
    if kind == "retry" and (code or "") in THROTTLE_CODES:
        pause = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_THROTTLE_PAUSE
        return Decision(Verdict.THROTTLED, min(pause, policy.backoff_max), f"throttled: {code}")
    if kind == "retry":
        if attempts >= policy.max_attempts:
            return Decision(Verdict.FAIL, None, "gave up after retries")
        delay = min(policy.backoff_max, policy.backoff_base * 2 ** (max(attempts, 1) - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, policy.backoff_max))
        return Decision(Verdict.RETRY, delay, f"retry: {code}")
    if kind == "bad_config":
        return Decision(Verdict.CONFIG, policy.config_pause, f"provider configuration error ({code})")
    if kind == "opted_out":
        return Decision(Verdict.OPTED_OUT, None, "recipient opted out at the provider")
    return Decision(Verdict.FAIL, None, "permanent provider error")
