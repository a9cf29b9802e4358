"""The courier's rules without a process: when to prefetch, deadlines, stopping, and what crosses the pipe."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime

from optline.adapters.providers.base import ErrorKind, OutboundSms, ProviderError, SendResult
from optline.services.courier import Delivery, Handover, deliver_all, prefetch_due
from optline.services.rate_limit import RateLimiter

AT = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)


class Recording:
    name = "recording"
    reconcile_after = 0.0

    def __init__(self, fail: dict[str, ProviderError] | None = None) -> None:
        self.sent: list[str] = []
        self.fail = fail or {}

    def send(self, sms: OutboundSms) -> SendResult:
        if sms.to in self.fail:
            raise self.fail[sms.to]
        self.sent.append(sms.to)
        return SendResult(f"SM{len(self.sent)}")

    def find_sent(self, sms: OutboundSms, since: datetime) -> str | None:
        return "SM-found" if sms.to == "+15550000001" else None


def handovers(n: int, reconcile: bool = False) -> list[Handover]:
    return [Handover(i, OutboundSms(f"+1555000000{i}", "+14155550100", f"hi {i}", f"k{i}"),
                     AT if reconcile else None, "+14155550100", None) for i in range(n)]  # fmt: skip


def test_prefetch_waits_for_a_sample_then_for_the_end_of_the_batch() -> None:
    # 100 calls, 1 ms each so far, preparing takes 20 ms: start when 25 calls (20 ms * 1.25 / 1 ms) remain.
    assert not prefetch_due(4, 100, 0.004, 0.020)  # too few calls to estimate from
    assert not prefetch_due(50, 100, 0.050, 0.020)
    assert not prefetch_due(74, 100, 0.074, 0.020)
    assert prefetch_due(76, 100, 0.076, 0.020)
    assert prefetch_due(8, 9, 0.008, 0.0)  # at the latest alongside the last call
    assert not prefetch_due(3, 4, 0.003, 10.0)  # batches of five or fewer are prepared after they finish


def test_deliver_all_reports_sent_failed_and_reconciled() -> None:
    busy = ProviderError(ErrorKind.RETRY, "busy", code="20429", retry_after=30.0)
    sender = Recording(fail={"+15550000002": busy})
    out = deliver_all(sender, RateLimiter(), handovers(3), deadline=time.monotonic() + 60, now=lambda: AT)
    assert [d.provider_id for d in out] == ["SM1", "SM2", None] and out[2].error is busy
    assert all(d.at == AT and not d.expired for d in out)
    found = deliver_all(sender, RateLimiter(), handovers(2, reconcile=True)[1:], deadline=time.monotonic() + 60,
                        now=lambda: AT)  # fmt: skip
    assert found[0].provider_id == "SM-found" and sender.sent == [
        "+15550000000",
        "+15550000001",
    ]  # not resent


def test_no_call_starts_after_the_deadline_or_once_progress_says_stop() -> None:
    sender = Recording()
    expired = deliver_all(sender, RateLimiter(), handovers(3), deadline=time.monotonic() - 1, now=lambda: AT)
    assert all(d.expired for d in expired) and sender.sent == []
    stopped = deliver_all(sender, RateLimiter(), handovers(4), deadline=time.monotonic() + 60, now=lambda: AT,
                          progress=lambda done, _elapsed: done < 2)  # fmt: skip
    assert [d.expired for d in stopped] == [False, False, True, True] and len(sender.sent) == 2


def test_what_crosses_the_pipe_survives_pickling() -> None:
    error = ProviderError(ErrorKind.OPTED_OUT, "unsubscribed recipient", code="21610", retry_after=None)
    delivery = pickle.loads(pickle.dumps(Delivery(7, error=error, at=AT)))
    assert (delivery.message_id, delivery.at) == (7, AT)
    assert delivery.error is not None
    assert (delivery.error.kind, delivery.error.code, delivery.error.message) == (
        ErrorKind.OPTED_OUT,
        "21610",
        "unsubscribed recipient",
    )
    assert pickle.loads(pickle.dumps(handovers(1)[0])) == handovers(1)[0]
