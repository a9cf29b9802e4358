from datetime import UTC, datetime, timedelta

import pytest

from optline.domain import caps

NOW = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)


def test_under_the_cap_sends() -> None:
    assert caps.check(3, timedelta(days=7), [NOW - timedelta(days=1)] * 2, NOW, "defer").ok


def test_at_the_cap_defers_until_the_oldest_leaves_the_window() -> None:
    sent = [NOW - timedelta(days=6), NOW - timedelta(days=2), NOW - timedelta(hours=1)]
    decision = caps.check(3, timedelta(days=7), sent, NOW, "defer")
    assert not decision.ok and decision.not_before == NOW + timedelta(days=1)


def test_skip_policy_and_old_messages_do_not_count() -> None:
    assert caps.check(1, timedelta(days=7), [NOW - timedelta(hours=1)], NOW, "skip").skip
    assert caps.check(1, timedelta(days=7), [NOW - timedelta(days=8)], NOW, "skip").ok


def test_settings() -> None:
    cap = caps.from_settings({"frequency_cap": {"max": 2, "days": 7, "action": "skip"}})
    assert cap == caps.Cap(2, timedelta(days=7), "skip")
    assert caps.from_settings({}) is None
    with pytest.raises(caps.CapSettingError, match="frequency_cap"):
        caps.from_settings({"frequency_cap": {"max": 0}})
