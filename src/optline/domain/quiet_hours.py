"""Quiet hours in the recipient's local time, and the next moment a message may go out.

Zone: the contact's own time zone; else the number's; else (unknown or ambiguous) every zone of the
country, and a message is allowed only when it is allowed in all of them — the strictest reading.
Federal (TCPA) window 8:00–21:00 local; Florida, Oklahoma and Maryland 8:00–20:00 and at most three
messages per 24 hours (their mini-TCPA laws).

A program may narrow the window (setting ``quiet_hours``: ``{"start": "09:00", "end": "20:00"}``), never
widen it: the law's window is the outer bound, a program's is a courtesy inside it, and a recipient in a
strict state gets the narrower of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Window:
    start: time
    end: time


FEDERAL = Window(time(8), time(21))
STRICT_STATES: dict[str, Window] = {"FL": Window(time(8), time(20)), "OK": Window(time(8), time(20)),
                                     "MD": Window(time(8), time(20))}  # fmt: skip
STRICT_STATE_MAX_PER_24H = 3


class QuietHoursError(ValueError):
    """A program sending window that cannot be used; the message names the value and the rule."""


def _read_time(text: str, which: str) -> time:
    text = text.strip()
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise QuietHoursError(f"sending window {which} {text!r} is not a time like 09:00") from None


@lru_cache(maxsize=64)  # read for every message the dispatcher checks
def read_window(start: str, end: str) -> Window:
    """A program's sending window from its two times ("HH:MM"), inside the federal 08:00-21:00 and opening
    before the strict states close (else their recipients could never be sent to: deferred forever)."""
    window = Window(_read_time(start, "start"), _read_time(end, "end"))
    if window.start < FEDERAL.start:
        raise QuietHoursError(
            f"sending window start {window.start:%H:%M} is before {FEDERAL.start:%H:%M}, the earliest the law allows"
        )
    if window.end > FEDERAL.end:
        raise QuietHoursError(
            f"sending window end {window.end:%H:%M} is after {FEDERAL.end:%H:%M}, the latest the law allows"
        )
    strict_end = min(w.end for w in STRICT_STATES.values())
    if window.start >= strict_end:
        raise QuietHoursError(
            f"sending window start {window.start:%H:%M} leaves no time in {', '.join(sorted(STRICT_STATES))}, "
            f"where state law ends sending at {strict_end:%H:%M}"
        )
    if window.start >= window.end:
        raise QuietHoursError(
            f"sending window start {window.start:%H:%M} must be before its end {window.end:%H:%M}"
        )
    return window


def program_window(settings: Mapping[str, Any]) -> Window:
    """The program's sending window (setting ``quiet_hours``), or the federal window when it sets none."""
    raw = settings.get("quiet_hours")
    if not raw:
        return FEDERAL
    return read_window(str(raw.get("start") or ""), str(raw.get("end") or ""))


def window_for(us_state: str | None, program: Window = FEDERAL) -> Window:
    """The window for a recipient: the state's (or federal) law, narrowed by the program's own window."""
    law = STRICT_STATES.get((us_state or "").upper(), FEDERAL)
    return Window(max(law.start, program.start), min(law.end, program.end))


def daily_limit(us_state: str | None) -> int | None:
    """Messages allowed per rolling 24 hours by state law (None: no state limit)."""
    return STRICT_STATE_MAX_PER_24H if (us_state or "").upper() in STRICT_STATES else None


@lru_cache(maxsize=1)
def _country_zones() -> dict[str, tuple[str, ...]]:
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        zones.setdefault(parts[0], []).append(parts[2])
    return {k: tuple(v) for k, v in zones.items()}


def country_zones(region: str | None) -> tuple[str, ...]:
    return _country_zones().get((region or "").upper(), ())


def zones_for(contact_zone: str | None, number_zones: Iterable[str], region: str | None) -> tuple[str, ...]:
    """The zone(s) to respect: contact's, else the number's, else all of the country's (else UTC)."""
    for candidates in ((contact_zone,) if contact_zone else (), tuple(number_zones), country_zones(region)):
        valid = tuple(z for z in candidates if _valid(z))
        if valid:
            return valid
    return ("UTC",)


@lru_cache(maxsize=1024)
def _valid(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def allowed_in(at: datetime, zone: str, window: Window) -> bool:
    local = at.astimezone(ZoneInfo(zone)).time()
    return window.start <= local < window.end


def allowed(at: datetime, zones: Iterable[str], window: Window = FEDERAL) -> bool:
    return all(allowed_in(at, z, window) for z in zones)


def _next_in_zone(at: datetime, zone: str, window: Window) -> datetime:
    if allowed_in(at, zone, window):
        return at
    tz = ZoneInfo(zone)
    local = at.astimezone(tz)
    day = local.date() if local.time() < window.start else local.date() + timedelta(days=1)
    return datetime.combine(day, window.start, tzinfo=tz).astimezone(at.tzinfo)


def next_allowed(at: datetime, zones: Iterable[str], window: Window = FEDERAL) -> datetime:
    """The first moment at or after ``at`` that is inside the window in every zone.

    Zones far apart may share no window at all (e.g. Guam and Hawaii); then the earliest opening among
    them after a day of searching is returned so nothing waits forever.
    """
    zone_list = tuple(zones)
    candidate = at
    for _ in range(len(zone_list) * 4 + 4):
        moved = candidate
        for z in zone_list:
            moved = max(moved, _next_in_zone(moved, z, window))
        if allowed(moved, zone_list, window):
            return moved
        candidate = moved + timedelta(minutes=1)
        if candidate - at > timedelta(days=2):
            break
    return min(_next_in_zone(at, z, window) for z in zone_list)
