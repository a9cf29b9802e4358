from datetime import UTC, datetime

import pytest

from optline.domain import quiet_hours as qh


def test_federal_window_in_the_recipients_zone() -> None:
    at = datetime(2026, 11, 26, 13, 30, tzinfo=UTC)  # 8:30 New York, 5:30 Los Angeles
    assert qh.allowed(at, ["America/New_York"])
    assert not qh.allowed(at, ["America/Los_Angeles"])
    nxt = qh.next_allowed(at, ["America/Los_Angeles"])
    assert nxt == datetime(2026, 11, 26, 16, 0, tzinfo=UTC)


def test_after_nine_pm_defers_to_next_morning() -> None:
    at = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)  # 21:30 New York
    assert qh.next_allowed(at, ["America/New_York"]) == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)


def test_strict_states_close_at_eight_and_limit_three_per_day() -> None:
    at = datetime(2026, 11, 27, 1, 30, tzinfo=UTC)  # 20:30 Miami
    assert qh.allowed(at, ["America/New_York"], qh.window_for("NY"))
    assert not qh.allowed(at, ["America/New_York"], qh.window_for("FL"))
    assert qh.daily_limit("fl") == 3 and qh.daily_limit("OK") == 3 and qh.daily_limit("CA") is None


def test_unknown_zone_uses_the_strictest_of_the_country() -> None:
    zones = qh.zones_for(None, (), "US")
    assert "America/New_York" in zones and "Pacific/Honolulu" in zones
    at = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # 9:00 New York, 4:00 Honolulu
    assert not qh.allowed(at, zones)
    nxt = qh.next_allowed(at, zones)
    assert nxt > at and qh.allowed(nxt, ["America/New_York", "America/Los_Angeles"])


def test_contact_zone_wins_over_number_zone() -> None:
    assert qh.zones_for("Europe/Lisbon", ("America/New_York",), "US") == ("Europe/Lisbon",)
    assert qh.zones_for(None, ("America/Chicago",), "US") == ("America/Chicago",)
    assert qh.zones_for("Not/AZone", (), None) == ("UTC",)


def test_a_programs_window_narrows_the_law_never_widens_it() -> None:
    program = qh.read_window("09:30", "20:30")
    assert qh.window_for("NY", program) == qh.Window(qh.time(9, 30), qh.time(20, 30))
    assert qh.window_for("FL", program) == qh.Window(qh.time(9, 30), qh.time(20))  # the state closes first
    assert qh.program_window({}) == qh.FEDERAL
    assert qh.program_window({"quiet_hours": {"start": "09:30", "end": "20:30"}}) == program
    at = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # 9:00 New York
    assert not qh.allowed(at, ["America/New_York"], qh.window_for(None, program))
    assert qh.next_allowed(at, ["America/New_York"], qh.window_for(None, program)) == datetime(
        2026, 11, 26, 14, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("07:00", "20:00", "before 08:00, the earliest the law allows"),
        ("09:00", "22:00", "after 21:00, the latest the law allows"),
        ("20:00", "21:00", "leaves no time in FL, MD, OK"),
        ("18:00", "10:00", "must be before its end"),
        ("9am", "20:00", "start '9am' is not a time like 09:00"),
        ("09:00", "", "end '' is not a time like 09:00"),
    ],
)
def test_an_impossible_window_is_refused_naming_the_value(start: str, end: str, says: str) -> None:
    with pytest.raises(qh.QuietHoursError, match=says):
        qh.read_window(start, end)
