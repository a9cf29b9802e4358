"""Consent vocabulary and the one rule that turns ledger events into a subscription status."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class Action(StrEnum):
    OPT_IN = "opt_in"
    OPT_IN_CONFIRMED = "opt_in_confirmed"
    OPT_OUT = "opt_out"
    REVIEW_HOLD = "review_hold"
    REVIEW_CLEARED = "review_cleared"


class Channel(StrEnum):
    SMS_KEYWORD = "sms_keyword"
    SMS_TEXT = "sms_text"
    WEB = "web"
    API = "api"
    IMPORT = "import"
    PROVIDER = "provider"
    ADMIN = "admin"


class Status(StrEnum):
    NEVER = "never"
    PENDING = "pending"  # opted in, waiting for a double opt-in confirmation
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class OptOutScope(StrEnum):
    PROGRAM = "program"  # this program only
    BRAND = "brand"  # every program of the brand (FCC "revoke-all", required from 2027-01-31)


# After an opt-out, only the person brings themselves back (invariant 4): a text from their own phone (START,
# UNSTOP, a join keyword) or their YES to a sign-up's prompt, which also arrives by text. A web form or an API
# call proves that someone typed the number, so from them an opt-in for an opted-out person can only be the
# first step of a sign-up (pending until that YES); an import or an operator cannot even do that.
PERSONS_OWN_CHANNELS = frozenset({Channel.SMS_KEYWORD})
SIGNUP_CHANNELS = frozenset({Channel.WEB, Channel.API})

# How far in the future a stated time of consent may be (clocks of other systems drift).
CLOCK_SKEW = timedelta(minutes=5)
# A web or API sign-up does not text someone who opted out this recently: its prompt would be the next text
# after their STOP (a form filled in, or a CRM re-syncing, minutes after they left).
RECENT_OPT_OUT = timedelta(minutes=15)


class ConsentRefused(ValueError):
    """A consent change that the rules do not allow; the message says which rule."""


class OptedOut(ConsentRefused):
    """An opt-in for a person who opted out, through a channel that cannot bring them back."""


def next_status(
    current: Status, action: Action, channel: Channel, *, double_opt_in: bool = False, signup: bool = False
) -> Status:
    """The subscription status after ``action`` arrives through ``channel`` — the only place this rule lives.

    ``signup``: the opt-in is the first step of a sign-up whose prompt asks the person to reply YES
    (services/signup.py); it ends pending. ``review_hold`` / ``review_cleared`` do not change the status: a
    hold is a separate flag, so clearing it restores exactly what was there before.
    """
    if action is Action.OPT_OUT:
        return Status.UNSUBSCRIBED
    if action in (Action.REVIEW_HOLD, Action.REVIEW_CLEARED):
        return current
    if action is Action.OPT_IN_CONFIRMED:
        if channel not in PERSONS_OWN_CHANNELS:
            raise ConsentRefused(f"only the person's own YES by text confirms a sign-up, not {channel.value}")
        return Status.SUBSCRIBED
    if action is not Action.OPT_IN:  # pragma: no cover
        raise AssertionError(f"unhandled action {action}")
    if current is Status.SUBSCRIBED:
        return Status.SUBSCRIBED
    if channel in PERSONS_OWN_CHANNELS:
        return Status.PENDING if double_opt_in else Status.SUBSCRIBED
    if signup and channel in SIGNUP_CHANNELS:
        return Status.PENDING
    if current is Status.UNSUBSCRIBED:
        raise OptedOut(
            f"the person opted out; an opt-in through {channel.value} cannot bring them back: only their own "
            "text (START) or their YES to a new sign-up's prompt can"
        )
    if current is Status.PENDING:
        # A pending sign-up ends only in the person's own YES: it may have started over an earlier opt-out.
        return Status.PENDING
    return Status.PENDING if double_opt_in else Status.SUBSCRIBED


def check_opt_in_time(occurred_at: datetime, *, now: datetime, last_opt_out: datetime | None) -> None:
    """Refuse a stated time of consent in the future, or before the person's last opt-out (which revoked it)."""
    if occurred_at > now + CLOCK_SKEW:
        raise ConsentRefused(
            f"the time of consent is in the future: {occurred_at.isoformat()} (now {now.isoformat()}); "
            "give the time the person consented"
        )
    if last_opt_out is not None and occurred_at < last_opt_out:
        raise ConsentRefused(
            "the time of consent is before the person's last opt-out, which revoked any consent given before "
            f"it: {occurred_at.isoformat()} (opted out {last_opt_out.isoformat()})"
        )


def check_signup_prompt(*, now: datetime, last_opt_out: datetime | None) -> None:
    """Refuse a web or API sign-up whose prompt would text someone who opted out minutes ago."""
    if last_opt_out is not None and now - last_opt_out < RECENT_OPT_OUT:
        minutes = max(1, int((now - last_opt_out).total_seconds() // 60))
        raise OptedOut(
            f"this number opted out {minutes} minute(s) ago ({last_opt_out.isoformat()}); a sign-up started "
            f"now would text them right after they said stop: not sent. The person can text START to rejoin, "
            f"or a sign-up can start after {int(RECENT_OPT_OUT.total_seconds() // 60)} minutes"
        )


def held_after(currently_held: bool, action: Action) -> bool:
    """Whether marketing is held for review after ``action``. An opt-out or a fresh opt-in settles a hold."""
    if action is Action.REVIEW_HOLD:
        return True
    if action in (Action.REVIEW_CLEARED, Action.OPT_OUT, Action.OPT_IN_CONFIRMED):
        return False
    return currently_held


# What an opt-in must carry to be evidence a court would accept, per channel (issue: consent capture).
REQUIRED_OPT_IN_EVIDENCE: dict[Channel, tuple[str, ...]] = {
    Channel.API: ("source", "disclosure_text"),
    Channel.WEB: ("ip", "user_agent", "disclosure_text", "source_url"),
    Channel.SMS_KEYWORD: ("message_text",),
    Channel.IMPORT: ("source",),
    Channel.ADMIN: ("operator", "note"),
}


def missing_evidence(action: Action, channel: Channel, evidence: dict[str, object]) -> list[str]:
    """Evidence fields an opt-in lacks (empty when complete). Opt-outs need none: any means counts."""
    if action not in (Action.OPT_IN, Action.OPT_IN_CONFIRMED):
        return []
    required = REQUIRED_OPT_IN_EVIDENCE.get(channel, ())
    return [name for name in required if not str(evidence.get(name) or "").strip()]
