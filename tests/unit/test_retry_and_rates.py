"""The pure rules of dispatch: the retry policy (domain/retry.py) and per-sender rate slots (domain/send_rate.py)."""

from __future__ import annotations

import itertools

import pytest

from optline.domain import retry, send_rate
from optline.domain.retry import RetryPolicy, Verdict

POLICY = RetryPolicy(max_attempts=3, backoff_base=2.0, backoff_max=60.0, config_pause=600.0)


@pytest.mark.parametrize(
    ("kind", "code", "attempts", "retry_after", "verdict", "delay"),
    [
        ("retry", "500", 1, None, Verdict.RETRY, 2.0),
        ("retry", "500", 2, None, Verdict.RETRY, 4.0),
        ("retry", "503", 1, 30.0, Verdict.RETRY, 30.0),  # Retry-After longer than the backoff wins
        ("retry", "timeout", 3, None, Verdict.FAIL, None),  # attempts used up
        ("retry", "500", 9, 5000.0, Verdict.FAIL, None),
        ("retry", "429", 1, 7.0, Verdict.THROTTLED, 7.0),  # pauses the sender for what was asked
        ("retry", "20429", 8, None, Verdict.THROTTLED, retry.DEFAULT_THROTTLE_PAUSE),  # never spends attempts
        ("retry", "21611", 1, 2.0, Verdict.THROTTLED, 2.0),  # Twilio: From's queue is full
        ("retry", "429", 1, 99999.0, Verdict.THROTTLED, 60.0),  # capped
        ("bad_config", "20003", 1, None, Verdict.CONFIG, 600.0),
        ("bad_config", "9", 8, None, Verdict.CONFIG, 600.0),  # out of credit: pause, however many attempts
        ("opted_out", "21610", 1, None, Verdict.OPTED_OUT, None),
        ("bad_request", "21211", 1, None, Verdict.FAIL, None),
    ],
)
def test_retry_policy(
    kind: str, code: str, attempts: int, retry_after: float | None, verdict: Verdict, delay: float | None
) -> None:
    decision = retry.decide(kind, code, attempts, retry_after, POLICY)
    assert (decision.verdict, decision.delay) == (verdict, delay)
    assert decision.reason


def test_slots_are_spaced_by_the_rate_and_stop_at_the_window() -> None:
    got = send_rate.reserve(next_free=0.0, paused_until=0.0, now=100.0, rate=4.0, n=10, horizon=1.0)
    assert got.slots == [100.0, 100.25, 100.5, 100.75]
    assert got.next_free == 101.0


def test_two_reservations_never_share_a_slot() -> None:
    """What the database row lock makes of two workers: the second starts where the first ended."""
    first = send_rate.reserve(0.0, 0.0, now=10.0, rate=50.0, n=30, horizon=5.0)
    second = send_rate.reserve(first.next_free, 0.0, now=10.1, rate=50.0, n=30, horizon=5.0)
    both = sorted(first.slots + second.slots)
    assert len(set(both)) == 60
    assert all(b - a >= 1 / 50 - 1e-9 for a, b in itertools.pairwise(both))
    # In any one second, at most `rate` slots.
    assert max(sum(1 for t in both if s <= t < s + 1 - 1e-9) for s in both) <= 50


def test_an_idle_sender_banks_no_burst_and_a_pause_holds_every_slot_back() -> None:
    idle = send_rate.reserve(next_free=1.0, paused_until=0.0, now=500.0, rate=10.0, n=3, horizon=5.0)
    assert idle.slots[0] == 500.0
    next_free, paused = send_rate.pause(next_free=500.3, paused_until=0.0, until=503.0)
    assert (next_free, paused) == (503.0, 503.0)
    after = send_rate.reserve(next_free, paused, now=500.5, rate=10.0, n=100, horizon=5.0)
    assert after.slots[0] == 503.0 and after.slots[-1] < 505.5
    full = send_rate.reserve(next_free=520.0, paused_until=0.0, now=500.0, rate=10.0, n=5, horizon=5.0)
    assert full.slots == [] and full.next_free == 520.0  # nothing inside the window: state unchanged


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        send_rate.reserve(0.0, 0.0, 0.0, 0.0, 1, 1.0)
