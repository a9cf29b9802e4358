"""Parsing the dates people put in spreadsheets. Naive times are taken as UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%m/%d/%y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d")


def parse_datetime(text: str) -> datetime:
    """ISO 8601 (``2024-03-01``, ``2024-03-01T10:00:00Z``, with offsets) or US ``03/01/2024 10:00``."""
    value = text.strip()
    if not value:
        raise ValueError("empty date")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        for fmt in _FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(
                f"unrecognised date {value!r} (use ISO 8601, e.g. 2024-03-01T10:00:00Z)"
            ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


WHEN_FORMATS = (
    "ISO 8601 (2026-12-01T15:00:00Z, 2026-12-01 10:00 in your zone), 'now', 'in 2 hours', 'in 30 minutes', "
    "'today 18:00', 'tomorrow 10:00', 'tomorrow 9am'"
)
_RELATIVE = re.compile(r"^in\s+(\d+)\s*(m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days)$")
_DAY_AND_TIME = re.compile(r"^(today|tomorrow)(?:\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?)?$")


def parse_when(text: str, now: datetime, zone: tzinfo) -> datetime:
    """A send time as an operator types it; words and naive times are read in the operator's ``zone``.

    Raises ValueError naming the accepted formats, so a command can print one line instead of a traceback.
    """
    value = " ".join(text.strip().lower().split())
    if value == "now":
        return now.astimezone(UTC)
    if m := _RELATIVE.match(value):
        amount, unit = int(m.group(1)), m.group(2)[0]
        step = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}[unit]
        return now.astimezone(UTC) + amount * step
    if m := _DAY_AND_TIME.match(value):
        day = now.astimezone(zone).date() + timedelta(days=1 if m.group(1) == "tomorrow" else 0)
        hour, minute = int(m.group(2) or 9), int(m.group(3) or 0)
        if m.group(4):
            if not 1 <= hour <= 12:
                raise ValueError(
                    f"unrecognised time {text.strip()!r}: {hour}{m.group(4)} is not a clock time"
                )
            hour = hour % 12 + (12 if m.group(4) == "pm" else 0)
        if hour > 23 or minute > 59:
            raise ValueError(f"unrecognised time {text.strip()!r}: {hour}:{minute:02d} is not a clock time")
        return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"unrecognised time {text.strip()!r}; accepted: {WHEN_FORMATS}") from None
    return (parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed).astimezone(UTC)


def local_zone(name: str | None) -> tzinfo:
    """The operator's zone: an IANA name, or this machine's zone when none is given."""
    if not name:
        return datetime.now().astimezone().tzinfo or UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as America/New_York)") from None
