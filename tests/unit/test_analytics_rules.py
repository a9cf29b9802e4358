"""Pure parts of the analytics: fatigue buckets, channel names, and the campaign flagging rule."""

from __future__ import annotations

from optline.services import analytics
from optline.services.analytics import CampaignRow


def test_frequency_buckets_cover_every_count_once() -> None:
    labels = [analytics.frequency_bucket(n) for n in range(0, 1200)]
    assert labels[0] == "0" and labels[1] == "1" and labels[7] == "6-7" and labels[30] == "21-30"
    assert labels[31] == labels[999] == labels[1100] == "31+"
    assert list(dict.fromkeys(labels)) == [b[0] for b in analytics.FREQUENCY_BUCKETS]


def test_every_opt_out_channel_has_a_report_name() -> None:
    assert set(analytics.CHANNEL_NAMES.values()) | {analytics.OTHER_CHANNEL} == set(analytics.REPORT_CHANNELS)


def test_flags_say_why_and_baseline_excludes_the_campaign() -> None:
    rows = [
        CampaignRow("a", sent=1000, delivered=1000, optouts=5, campaign_id=1, program="p"),
        CampaignRow("b", sent=1000, delivered=1000, optouts=6, campaign_id=2, program="p"),
        CampaignRow("spike", sent=500, delivered=500, optouts=15, campaign_id=3, program="p"),
        CampaignRow("no receipts", sent=100, delivered=0, optouts=3, campaign_id=4, program="q"),
    ]
    flagged = analytics._flag(rows)
    spike = next(r for r in flagged if r.key == "spike")
    assert spike.baseline == 11 / 2000  # the rest of the program
    assert spike.flagged and len(spike.why) == 2  # above baseline AND above 2%
    quiet = next(r for r in flagged if r.key == "a")
    assert not quiet.flagged and quiet.ci_low is not None and quiet.ci_low < 0.005 < quiet.ci_high  # type: ignore[operator]
    receipts = next(r for r in flagged if r.key == "no receipts")
    assert receipts.basis == "sent" and receipts.rate == 0.03 and receipts.flagged
    assert "2% critical level" in receipts.why[0]
    assert flagged[0].flagged  # flagged campaigns first
