"""Wilson score interval and the significance rule."""

from __future__ import annotations

import pytest

from optline.domain.stats import CRITICAL_OPTOUT_RATE, rate, significantly_above, wilson


def test_wilson_matches_published_values() -> None:
    # Wilson (1927) / Newcombe (1998) table: 81 of 263 → 0.2553 to 0.3662 at 95%.
    interval = wilson(81, 263)
    assert interval is not None
    assert interval.low == pytest.approx(0.2553, abs=5e-4)
    assert interval.high == pytest.approx(0.3662, abs=5e-4)


def test_wilson_at_the_edges_stays_in_unit_interval() -> None:
    zero = wilson(0, 10)
    assert zero is not None and zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=5e-4)
    full = wilson(10, 10)
    assert full is not None and full.high == 1.0 and full.low == pytest.approx(0.7225, abs=5e-4)
    assert wilson(0, 0) is None
    assert rate(0, 0) is None and rate(1, 4) == 0.25


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and trials"):
        wilson(5, 4)


def test_significance_needs_the_whole_interval_above_baseline() -> None:
    # 30 of 1000 (3%) against a 1% baseline: clearly above.
    assert significantly_above(30, 1000, 0.01)
    # 2 of 40 (5%) against 1%: the interval (1.4%–16.5%) is above; 1 of 40 is not.
    assert significantly_above(2, 40, 0.01)
    assert not significantly_above(1, 40, 0.01)
    assert not significantly_above(0, 0, 0.01)
    assert not significantly_above(5, 100, None)
    assert CRITICAL_OPTOUT_RATE == 0.02


def test_a_rate_never_exceeds_one() -> None:
    # More opt-outs than messages (people who left without a message in the window): never "166.67%".
    assert rate(5, 3) == 1.0
    assert rate(1, 4) == 0.25 and rate(0, 0) is None
