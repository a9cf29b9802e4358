"""Rates with honest uncertainty: the Wilson score interval, and "significantly above a baseline".

Why Wilson: opt-out rates are small proportions over counts that are sometimes small (a test send of 40
messages, a campaign with 2 opt-outs). The normal ("Wald") interval collapses to zero width at 0 events
and dips below 0; Wilson's interval stays inside [0, 1] and keeps its coverage at small n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The opt-out rate the industry treats as critical: above it carriers start filtering a sender's traffic.
CRITICAL_OPTOUT_RATE = 0.02
# Two-sided 95% interval; "significantly above" means the whole interval is above the baseline, i.e. a
# one-sided test at 2.5%.
Z_95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


def rate(events: int, trials: int) -> float | None:
    """events / trials, or None when there were no trials (a rate of nothing is not 0%).

    Capped at 100%: each message can draw at most one opt-out, so more opt-outs than messages (people who
    left without a message in the window, counted beside a few sent) cannot make "166.67% per sent"."""
    return min(events, trials) / trials if trials > 0 else None


def wilson(events: int, trials: int, z: float = Z_95) -> Interval | None:
    """The Wilson score interval for ``events`` successes in ``trials``; None when ``trials`` is 0."""
    if trials <= 0:
        return None
    if events < 0 or events > trials:
        raise ValueError(f"events must be between 0 and trials ({trials}), got {events}")
    p = events / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # At the edges the exact bounds are 0 and 1; float noise would give 1e-17 or 0.9999999999999999.
    low = 0.0 if events == 0 else max(0.0, centre - half)
    high = 1.0 if events == trials else min(1.0, centre + half)
    return Interval(low, high)


def significantly_above(events: int, trials: int, baseline: float | None, z: float = Z_95) -> bool:
    """True when the Wilson interval of events/trials lies entirely above ``baseline``."""
    interval = wilson(events, trials, z)
    return interval is not None and baseline is not None and interval.low > baseline
