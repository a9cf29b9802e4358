from __future__ import annotations

import pytest

from optline.domain.consent import (
    Action,
    Channel,
    ConsentRefused,
    Status,
    held_after,
    missing_evidence,
    next_status,
)


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("channel", list(Channel))
def test_opt_out_always_wins(status: Status, channel: Channel) -> None:
    assert next_status(status, Action.OPT_OUT, channel) is Status.UNSUBSCRIBED


@pytest.mark.parametrize("channel", [Channel.IMPORT, Channel.PROVIDER, Channel.SMS_TEXT, Channel.ADMIN])
def test_only_explicit_channels_resubscribe(channel: Channel) -> None:
    with pytest.raises(ConsentRefused):
        next_status(Status.UNSUBSCRIBED, Action.OPT_IN, channel)


@pytest.mark.parametrize("channel", [Channel.SMS_KEYWORD, Channel.WEB, Channel.API])
def test_explicit_opt_in_resubscribes(channel: Channel) -> None:
    assert next_status(Status.UNSUBSCRIBED, Action.OPT_IN, channel) is Status.SUBSCRIBED


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
