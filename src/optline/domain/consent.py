"""Consent vocabulary and the one rule that turns ledger events into a subscription status."""

from __future__ import annotations

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


# Channels that may (re-)subscribe someone who opted out: an explicit act by the person (invariant 4).
# An import is not one of them: it can add consent for someone new, never override an opt-out.
EXPLICIT_OPT_IN_CHANNELS = frozenset({Channel.SMS_KEYWORD, Channel.WEB, Channel.API})


class ConsentRefused(ValueError):
    """A consent change that the rules do not allow; the message says which rule."""


def next_status(current: Status, action: Action, channel: Channel, *, double_opt_in: bool = False) -> Status:
    """The subscription status after ``action`` arrives through ``channel`` — the only place this rule lives.

    ``review_hold`` / ``review_cleared`` do not change the status: a hold is a separate flag, so clearing it
    restores exactly what was there before.
    """
    if action is Action.OPT_OUT:
        return Status.UNSUBSCRIBED
    if action in (Action.REVIEW_HOLD, Action.REVIEW_CLEARED):
        return current
    if current is Status.UNSUBSCRIBED and channel not in EXPLICIT_OPT_IN_CHANNELS:
        raise ConsentRefused(f"an opted-out contact can only rejoin explicitly, not through {channel.value}")
    if action is Action.OPT_IN:
        if current is Status.SUBSCRIBED:
            return Status.SUBSCRIBED
        if current is Status.PENDING and channel not in EXPLICIT_OPT_IN_CHANNELS:
            # A pending double opt-in ends only in the person's own yes (or another explicit act): an import
            # must not complete it, since the sign-up may have started over an earlier opt-out.
            return Status.PENDING
        return Status.PENDING if double_opt_in else Status.SUBSCRIBED
    if action is Action.OPT_IN_CONFIRMED:
        return Status.SUBSCRIBED
    raise AssertionError(f"unhandled action {action}")  # pragma: no cover


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
