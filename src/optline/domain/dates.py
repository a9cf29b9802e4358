"""Parsing the dates people put in spreadsheets. Naive times are taken as UTC."""

from __future__ import annotations

from datetime import UTC, datetime

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
