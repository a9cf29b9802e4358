"""Frequency caps per contact and program: at most N marketing messages per rolling window.

Program setting ``frequency_cap`` (``programs.settings``): ``{"max": 4, "days": 7, "action": "defer"}`` —
``action`` is ``"defer"`` (send when the oldest counted message leaves the window) or ``"skip"`` (the
message becomes ``skipped`` with its reason). No setting: no cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Cap:
    max: int
    window: timedelta
    action: str  # defer | skip

    @property
    def reason(self) -> str:
        days = self.window / timedelta(days=1)
        return f"frequency cap: {self.max} marketing messages per {days:g} days"


class CapSettingError(ValueError):
    pass


def from_settings(settings: Mapping[str, Any]) -> Cap | None:
    raw = settings.get("frequency_cap")
    if not raw:
        return None
    try:
        cap = Cap(int(raw["max"]), timedelta(days=float(raw.get("days", 7))), str(raw.get("action", "defer")))
    except (KeyError, TypeError, ValueError) as exc:
        raise CapSettingError(f"programs.settings.frequency_cap is malformed ({raw!r}): {exc}") from None
    if cap.max < 1 or cap.action not in ("defer", "skip"):
        raise CapSettingError(
            f"programs.settings.frequency_cap needs max >= 1 and action defer|skip: {raw!r}"
        )
    return cap


@dataclass(frozen=True)
class Decision:
    ok: bool
    not_before: datetime | None = None  # when deferred
    skip: bool = False


def check(limit: int, window: timedelta, sent_at: Sequence[datetime], now: datetime, action: str) -> Decision:
    """``sent_at``: times of counted messages already handed over. Under the limit → ok."""
    recent = sorted(t for t in sent_at if t > now - window)
    if len(recent) < limit:
        return Decision(True)
    if action == "skip":
        return Decision(False, skip=True)
    # The window frees a place when the oldest message that keeps us at the limit falls out of it.
    return Decision(False, not_before=recent[len(recent) - limit] + window)
