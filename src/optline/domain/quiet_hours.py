"""Quiet hours in the recipient's local time, and the next moment a message may go out.

Zone: the contact's own time zone; else the number's; else (unknown or ambiguous) every zone of the
country, and a message is allowed only when it is allowed in all of them — the strictest reading.
Federal (TCPA) window 8:00–21:00 local; Florida, Oklahoma and Maryland 8:00–20:00 and at most three
messages per 24 hours (their mini-TCPA laws).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Window:
    start: time
    end: time


FEDERAL = Window(time(8), time(21))
STRICT_STATES: dict[str, Window] = {"FL": Window(time(8), time(20)), "OK": Window(time(8), time(20)),
                                     "MD": Window(time(8), time(20))}  # fmt: skip
STRICT_STATE_MAX_PER_24H = 3


def window_for(us_state: str | None) -> Window:
    return STRICT_STATES.get((us_state or "").upper(), FEDERAL)


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
