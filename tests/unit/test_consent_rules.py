from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optline.domain.consent import (
    RECENT_OPT_OUT,
    Action,
    Channel,
    ConsentRefused,
    OptedOut,
    Status,
    check_opt_in_time,
    check_signup_prompt,
    held_after,
    missing_evidence,
    next_status,
)


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("channel", list(Channel))
def test_opt_out_always_wins(status: Status, channel: Channel) -> None:
    assert next_status(status, Action.OPT_OUT, channel) is Status.UNSUBSCRIBED


@pytest.mark.parametrize("channel", [c for c in Channel if c is not Channel.SMS_KEYWORD])
def test_only_the_persons_own_text_resubscribes(channel: Channel) -> None:
    # Invariant 4 (issue 12, item 7): an API, web, import or operator opt-in cannot bring back an opted-out person.
    with pytest.raises(OptedOut, match=f"through {channel.value} cannot bring them back"):
        next_status(Status.UNSUBSCRIBED, Action.OPT_IN, channel)
    with pytest.raises(ConsentRefused):
        next_status(Status.UNSUBSCRIBED, Action.OPT_IN_CONFIRMED, channel)


def test_the_persons_own_keyword_resubscribes() -> None:
    assert next_status(Status.UNSUBSCRIBED, Action.OPT_IN, Channel.SMS_KEYWORD) is Status.SUBSCRIBED


@pytest.mark.parametrize("channel", [Channel.WEB, Channel.API])
def test_a_web_or_api_signup_for_an_opted_out_person_waits_for_their_yes(channel: Channel) -> None:
    assert next_status(Status.UNSUBSCRIBED, Action.OPT_IN, channel, signup=True) is Status.PENDING
    assert next_status(Status.PENDING, Action.OPT_IN_CONFIRMED, Channel.SMS_KEYWORD) is Status.SUBSCRIBED


@pytest.mark.parametrize("channel", [Channel.WEB, Channel.API, Channel.IMPORT, Channel.ADMIN])
def test_only_the_persons_yes_completes_a_pending_signup(channel: Channel) -> None:
    assert next_status(Status.PENDING, Action.OPT_IN, channel) is Status.PENDING


def test_opt_in_times_in_the_future_or_before_the_last_opt_out_are_refused() -> None:
    now = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
    check_opt_in_time(now + timedelta(minutes=4), now=now, last_opt_out=now - timedelta(days=1))  # skew: fine
    with pytest.raises(ConsentRefused, match="the time of consent is in the future: 2099-01-01"):
        check_opt_in_time(datetime(2099, 1, 1, tzinfo=UTC), now=now, last_opt_out=None)
    with pytest.raises(ConsentRefused, match="before the person's last opt-out"):
        check_opt_in_time(now - timedelta(days=2), now=now, last_opt_out=now - timedelta(days=1))


def test_a_signup_prompt_never_follows_a_stop_within_minutes() -> None:
    now = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
    with pytest.raises(OptedOut, match="opted out 3 minute"):
        check_signup_prompt(now=now, last_opt_out=now - timedelta(minutes=3))
    check_signup_prompt(now=now, last_opt_out=now - RECENT_OPT_OUT)
    check_signup_prompt(now=now, last_opt_out=None)


def test_double_opt_in_waits_for_confirmation() -> None:
    pending = next_status(Status.NEVER, Action.OPT_IN, Channel.WEB, double_opt_in=True)
    assert pending is Status.PENDING
    assert next_status(pending, Action.OPT_IN_CONFIRMED, Channel.SMS_KEYWORD) is Status.SUBSCRIBED


def test_review_hold_keeps_status_and_sets_flag() -> None:
    assert next_status(Status.SUBSCRIBED, Action.REVIEW_HOLD, Channel.SMS_TEXT) is Status.SUBSCRIBED
    assert held_after(False, Action.REVIEW_HOLD) is True
    assert held_after(True, Action.REVIEW_CLEARED) is False
    assert held_after(True, Action.OPT_OUT) is False
    assert held_after(True, Action.OPT_IN) is True


def test_opt_in_evidence_is_required_per_channel() -> None:
    assert missing_evidence(Action.OPT_IN, Channel.API, {"source": "crm"}) == ["disclosure_text"]
    assert (
        missing_evidence(Action.OPT_IN, Channel.API, {"source": "crm", "disclosure_text": "Reply STOP"}) == []
    )
    assert missing_evidence(Action.OPT_OUT, Channel.API, {}) == []
