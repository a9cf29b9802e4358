"""Consent capture: keyword sign-up, the web form and the API, with the SMS double opt-in.

The two steps and their evidence:
1. ``start``: someone texts a join keyword, submits the web form, or an API caller vouches for them. The
   first step is an ``opt_in`` event (status ``pending`` when a double opt-in follows: not sendable for
   marketing) whose evidence names the disclosure version shown; the prompt (the disclosure plus "Reply Y
   to confirm, STOP to cancel") is enqueued as a ``signup`` message.
2. ``confirm``: an explicit yes from that phone within the program's window records ``opt_in_confirmed``
   with both messages (the prompt sent and the reply received) and the first step as evidence.
Unconfirmed sign-ups expire (``expire_due``): nothing is recorded as consent and nothing more is sent.

Web and API sign-ups always use the double opt-in, whatever the program says: a form or an API call proves
that someone typed a number, not that its owner agreed. A keyword comes from the phone itself, so it
follows the program's ``double_opt_in`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import ledger
from optline.adapters.db import programs as program_repo
from optline.adapters.db import signups as repo
from optline.adapters.db.tables import messages, programs
from optline.domain import disclosure as words
from optline.domain.consent import (
    SIGNUP_CHANNELS,
    Action,
    Channel,
    ConsentRefused,
    Status,
    check_opt_in_time,
    check_signup_prompt,
)
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent, outbox
from optline.services.outbox import Kind

DEFAULT_WINDOW_HOURS = 24.0
MAX_WINDOW_HOURS = 24.0 * 30


class SignupError(ValueError):
    """A sign-up that cannot start (unknown disclosure version, bad setting …); the message says why."""


# --- disclosure versions -----------------------------------------------------------------------------


def current_disclosure(conn: Connection, clock: Clock, program: Mapping[str, Any]) -> dict[str, Any]:
    """The program's disclosure as shown now. Creates version 1 on first use, and a new version when the
    program's settings (brand, frequency, links) changed and its disclosure is the composed default."""
    latest = repo.latest_disclosure(conn, program["id"])
    if latest is not None and latest["custom"]:
        return latest
    text = words.call_to_action(program)
    if latest is not None and latest["text"] == text:
        return latest
    return repo.add_disclosure(conn, program["id"], text, custom=False, now=clock.now())


def set_disclosure(
    conn: Connection, clock: Clock, program: Mapping[str, Any], text: str | None
) -> tuple[dict[str, Any], bool]:
    """Make ``text`` the program's disclosure (None: back to the composed default). Returns (version,
    created). A text without every CTIA element is refused, naming what it lacks."""
    custom = text is not None
    text = " ".join((text or words.call_to_action(program)).split())
    missing = words.missing_elements(text, program)
    if missing:
        raise SignupError(f"the disclosure for {program['name']!r} lacks: {'; '.join(missing)}")
    latest = repo.latest_disclosure(conn, program["id"])
    if latest is not None and latest["text"] == text and latest["custom"] == custom:
        return latest, False
    return repo.add_disclosure(conn, program["id"], text, custom=custom, now=clock.now()), True


def disclosure_shown(conn: Connection, program: Mapping[str, Any]) -> str:
    """The disclosure a sign-up would show now (read only: a version is recorded when one is shown)."""
    latest = repo.latest_disclosure(conn, program["id"])
    if latest is not None and latest["custom"]:
        return str(latest["text"])
    return words.call_to_action(program)


def change_disclosure(
    conn: Connection, clock: Clock, program: Mapping[str, Any], text: str | None, *, shown: str
) -> dict[str, Any] | None:
    """An edit of the disclosure (the program page, ``PATCH /v1/programs/{name}``): a new version only when
    ``text`` differs from ``shown`` (what the editor saw: ``disclosure_shown`` before any other setting of
    the same edit changed) other than in spacing; empty or None is back to the composed default. Returns the
    new version, or None when nothing changed. SignupError names the CTIA elements a text lacks.

    Compared with what was shown, not with the default of the settings being saved: a page saved with its
    box untouched and a new frequency text keeps the composed default (which follows the new frequency)
    instead of freezing the old text as a custom one."""
    if " ".join((text or "").split()) == " ".join(shown.split()):
        return None
    version, created = set_disclosure(conn, clock, program, text if text and text.strip() else None)
    return version if created else None


def window(program: Mapping[str, Any]) -> timedelta:
    hours = (program.get("settings") or {}).get("signup_window_hours", DEFAULT_WINDOW_HOURS)
    return timedelta(hours=float(hours))


def set_window(conn: Connection, program: Mapping[str, Any], hours: float) -> dict[str, Any]:
    """Set how long a double opt-in waits for the yes (program setting ``signup_window_hours``)."""
    if not 0 < hours <= MAX_WINDOW_HOURS:
        raise SignupError(
            f"the confirmation window must be more than 0 and at most {MAX_WINDOW_HOURS:g} hours"
        )
    # Read again under the row's lock: the settings JSON is written whole, and a copy read before another
    # change committed (a PATCH of the opt-out link) would put that setting back.
    current = program_repo.get(conn, program["id"], for_update=True) or dict(program)
    settings = {**(current.get("settings") or {}), "signup_window_hours": hours}
    conn.execute(update(programs).where(programs.c.id == program["id"]).values(settings=settings))
    program_repo.forget(conn)  # inbound routing caches programs (adapters/db/programs.py)
    return {**current, "settings": settings}


# --- step 1: start -----------------------------------------------------------------------------------


@dataclass
class Started:
    outcome: str  # pending | subscribed | already_subscribed | already_pending
    contact: dict[str, Any]
    signup: dict[str, Any] | None = None
    message: dict[str, Any] | None = None


def start_for_phone(
    conn: Connection, clock: Clock, *, program: Mapping[str, Any], phone: str, region: str, **kwargs: Any
) -> Started:
    """``start`` for a number typed by someone (web form, API): parsed first (InvalidPhoneNumber)."""
    parsed = parse_phone(phone, region)
    contact, _ = contact_repo.get_or_create(conn, parsed, clock.now())
    return start(conn, clock, program=program, contact=contact, **kwargs)


def start(
    conn: Connection,
    clock: Clock,
    *,
    program: Mapping[str, Any],
    contact: Mapping[str, Any],
    channel: Channel,
    evidence: Mapping[str, Any],
    disclosure_version_id: int | None = None,
    client_ip: str | None = None,
    from_phone: str | None = None,
    occurred_at: datetime | None = None,
) -> Started:
    """Step 1 of a sign-up through ``channel`` (sms_keyword, web or api). Raises ConsentRefused when the
    evidence is incomplete or the time of consent is in the future or before the person's last opt-out,
    OptedOut when a web or API sign-up would text someone who opted out minutes ago, SignupError when the
    disclosure version shown is not the program's. For a person who opted out, a web or API sign-up is the
    only opt-in those channels can make: pending, until the person's own YES."""
    if channel not in (Channel.SMS_KEYWORD, Channel.WEB, Channel.API):
        raise SignupError(f"sign-ups start by keyword, web form or API, not through {channel.value}")
    now = clock.now()
    ledger.lock_contact(conn, contact["id"])  # one sign-up decision per contact at a time
    contact = dict(contact)
    version = _version_shown(conn, clock, program, disclosure_version_id)
    status, _ = consent.current(conn, contact["id"], program)
    sender = from_phone or _default_sender(program)
    if status is Status.SUBSCRIBED:
        if channel is Channel.SMS_KEYWORD:  # they asked by text: tell them; a form gets the generic page
            reply = _reply(
                conn,
                clock,
                program,
                contact,
                Kind.CONFIRMATION,
                words.already_subscribed(program),
                ("already", evidence.get("provider_message_id") or now.isoformat()),
                sender,
            )
            return Started("already_subscribed", contact, message=reply)
        return Started("already_subscribed", contact)

    last_out = consent.last_opt_out(conn, contact["id"], program)
    # Checked before anything is written (a web form that catches the refusal still commits its transaction).
    check_opt_in_time(as_utc(occurred_at or now), now=now, last_opt_out=last_out)
    if channel in SIGNUP_CHANNELS:  # not a text from their own phone: never right after their STOP
        check_signup_prompt(now=now, last_opt_out=last_out)

    pending = repo.latest_for(conn, contact["id"], program["id"], status="pending")
    if pending is not None and as_utc(pending["expires_at"]) <= now:
        repo.set_fields(conn, pending["id"], status="expired", expired_at=now)
    elif pending is not None and status is not Status.PENDING:
        repo.set_fields(
            conn,
            pending["id"],
            status="cancelled",
            cancelled_at=now,
            cancel_reason=f"a new sign-up started while the status was {status.value}",
        )
    elif pending is not None:
        if channel is not Channel.SMS_KEYWORD:
            # A form or API call must not make a phone ring twice in one window (someone else may be typing
            # the number): the first prompt stands.
            return Started("already_pending", contact, signup=pending)
        repo.set_fields(
            conn,
            pending["id"],
            status="cancelled",
            cancelled_at=now,
            cancel_reason="superseded by a new keyword sign-up",
        )

    double = channel is not Channel.SMS_KEYWORD or bool(program.get("double_opt_in"))
    prompt = (
        words.double_opt_in_prompt(program)
        if double
        else f"{program['brand']}: you're subscribed. {version['text']}"
    )
    first_step = {
        **_jsonable(evidence),
        "disclosure_version_id": version["id"],
        "disclosure_version": version["version"],
        "reply_text": prompt,
        "double_opt_in": double,
    }
    if channel is not Channel.API:  # the text optline showed; an API caller vouches for the text it showed
        first_step["disclosure_text"] = version["text"]
    signup = repo.create(
        conn,
        contact_id=contact["id"],
        program_id=program["id"],
        channel=channel.value,
        status="pending" if double else "confirmed",
        disclosure_version_id=version["id"],
        evidence=first_step,
        client_ip=client_ip,
        started_at=now,
        expires_at=now + window(program),
        confirmed_at=None if double else now,
    )
    first_step["signup_id"] = signup["id"]
    # record() decides pending vs subscribed from the program's double_opt_in; web/API force it on.
    change = consent.record(
        conn,
        clock,
        contact_id=contact["id"],
        program={**program, "double_opt_in": double},
        action=Action.OPT_IN,
        channel=channel,
        evidence=first_step,
        occurred_at=occurred_at,
        signup=double,
    )
    kind = Kind.SIGNUP if double else Kind.CONFIRMATION
    message = _reply(conn, clock, program, contact, kind, prompt, ("signup", signup["id"]), sender)
    repo.set_fields(
        conn,
        signup["id"],
        opt_in_event_id=change.event["id"],
        prompt_message_id=message["id"],
        evidence=first_step,
    )
    signup.update(opt_in_event_id=change.event["id"], prompt_message_id=message["id"], evidence=first_step)
    return Started("pending" if double else "subscribed", contact, signup=signup, message=message)


def _version_shown(
    conn: Connection, clock: Clock, program: Mapping[str, Any], version_id: int | None
) -> dict[str, Any]:
    if version_id is None:
        return current_disclosure(conn, clock, program)
    version = repo.disclosure(conn, version_id)
    if version is None or version["program_id"] != program["id"]:
        raise SignupError(f"disclosure version {version_id} does not belong to program {program['name']!r}")
    return version


# --- step 2: confirm, or expire ----------------------------------------------------------------------


def confirm(
    conn: Connection,
    clock: Clock,
    *,
    program: Mapping[str, Any],
    contact: Mapping[str, Any],
    text: str,
    evidence: Mapping[str, Any],
) -> bool:
    """Confirm the contact's pending sign-up when ``text`` is an explicit yes. True when the reply was
    consumed here (confirmed, or answered as too late); False when it was not about a sign-up."""
    if not words.is_confirmation(text):
        return False
    ledger.lock_contact(conn, contact["id"])
    signup = repo.latest_for(conn, contact["id"], program["id"])
    if signup is None or signup["status"] in ("confirmed", "cancelled"):
        return False
    now = clock.now()
    if signup["status"] == "pending" and as_utc(signup["expires_at"]) <= now:
        repo.set_fields(conn, signup["id"], status="expired", expired_at=now)
        signup.update(status="expired", expired_at=now)
    if signup["status"] == "expired":
        # A late yes: say so once (within a window's length), record nothing.
        if now - as_utc(signup["expired_at"]) > window(program):
            return False
        body = words.expired_notice(program, program.get("join_keywords") or [])
        _reply(
            conn,
            clock,
            program,
            contact,
            Kind.SIGNUP,
            body,
            ("expired", signup["id"]),
            _reply_from(program, evidence.get("to_phone")),
        )
        return True
    status, _ = consent.current(conn, contact["id"], program)
    if status is not Status.PENDING:  # e.g. they replied STOP in between: the sign-up is over
        repo.set_fields(
            conn,
            signup["id"],
            status="cancelled",
            cancelled_at=now,
            cancel_reason=f"status became {status.value} before the confirmation",
        )
        return False
    version = repo.disclosure(conn, signup["disclosure_version_id"]) or {}
    prompt = _message(conn, signup["prompt_message_id"])
    proof = {
        **_jsonable(evidence),
        "message_text": text,
        "signup_id": signup["id"],
        "disclosure_version_id": signup["disclosure_version_id"],
        "disclosure_version": version.get("version"),
        "disclosure_text": version.get("text"),
        "prompt": _jsonable(_prompt_evidence(prompt)),
        "first_step": _jsonable(
            {
                "event_id": signup["opt_in_event_id"],
                "channel": signup["channel"],
                "started_at": signup["started_at"],
                "evidence": signup["evidence"],
            }
        ),
    }
    change = consent.record(
        conn,
        clock,
        contact_id=contact["id"],
        program=program,
        action=Action.OPT_IN_CONFIRMED,
        channel=Channel.SMS_KEYWORD,
        evidence=proof,
    )
    repo.set_fields(
        conn, signup["id"], status="confirmed", confirmed_at=now, confirm_event_id=change.event["id"]
    )
    _reply(
        conn,
        clock,
        program,
        contact,
        Kind.CONFIRMATION,
        words.welcome(program),
        ("welcome", signup["id"]),
        _reply_from(program, evidence.get("to_phone")),
    )
    return True


def expire_due(conn: Connection, clock: Clock, *, limit: int = 1000) -> int:
    """Close pending sign-ups whose window has passed. Nothing is sent and no consent is recorded: their
    subscription stays ``pending``, which is never sendable. Meant to run periodically (worker, cron)."""
    return len(repo.expire_due(conn, clock.now(), limit))


# --- the seam for the inbound service ------------------------------------------------------------------


def may_consume(program: Mapping[str, Any], text: str) -> bool:
    """Whether ``handle_inbound`` could take this reply (a join keyword of the program, or a yes): when not,
    it reads nothing and returns False, so a caller may leave it out (a burst of STOPs)."""
    return words.matched_keyword(text, program.get("join_keywords") or []) is not None or (
        words.is_confirmation(text)
    )


def handle_inbound(
    conn: Connection,
    clock: Clock,
    *,
    program: Mapping[str, Any] | None,
    contact: Mapping[str, Any] | None,
    text: str,
    evidence: Mapping[str, Any],
) -> bool:
    """Called by the inbound service for every reply, before classification-driven actions. True when the
    reply was a join keyword or the yes to a pending sign-up: the inbound service must not act on it again.

    ``evidence``: what the inbound service knows of the message (provider, provider_message_id,
    from_phone, to_phone, received_at); ``message_text`` is added here.
    """
    if program is None:
        return False
    keyword = words.matched_keyword(text, program.get("join_keywords") or [])
    if contact is None and keyword is not None and evidence.get("from_phone"):
        # A join from a number optline has never seen: it becomes a contact now.
        contact, _ = contact_repo.get_or_create(conn, parse_phone(str(evidence["from_phone"])), clock.now())
    if contact is None:
        return False
    if keyword is not None:
        start(
            conn,
            clock,
            program=program,
            contact=contact,
            channel=Channel.SMS_KEYWORD,
            evidence={**evidence, "message_text": text, "keyword": keyword},
            from_phone=_reply_from(program, evidence.get("to_phone")),
        )
        return True
    return confirm(conn, clock, program=program, contact=contact, text=text, evidence=evidence)


def double_opt_in_hook(
    conn: Connection,
    clock: Clock,
    *,
    program: Mapping[str, Any],
    contact: Mapping[str, Any],
    inbound_id: int | None,
    text: str,
) -> int | None:
    """The inbound service's hook for an explicit opt-in word (START, UNSTOP, YES …) on a double opt-in
    program when no sign-up was pending: it starts one, so the person gets the disclosure and must confirm.
    Returns the ``opt_in`` event id (None when nothing was recorded, e.g. already subscribed)."""
    started = start(
        conn,
        clock,
        program=program,
        contact=contact,
        channel=Channel.SMS_KEYWORD,
        evidence={"message_text": text, "inbound_id": inbound_id},
    )
    return started.signup["opt_in_event_id"] if started.signup else None


# --- helpers ---------------------------------------------------------------------------------------------


def _reply_from(program: Mapping[str, Any], to_phone: Any) -> str | None:
    """Answer from the number the person texted, written as E.164 when it is a phone number (some providers
    drop the '+'); a short code stays as it is."""
    if not to_phone:
        return _default_sender(program)
    raw = str(to_phone)
    if raw == program.get("short_code") or raw in (program.get("sender_numbers") or []):
        return raw
    try:
        return parse_phone(raw if raw.startswith("+") else f"+{raw}").e164
    except InvalidPhoneNumber:
        return raw


def _default_sender(program: Mapping[str, Any]) -> str | None:
    numbers = program.get("sender_numbers") or []
    return program.get("short_code") or (numbers[0] if numbers else None)


def _reply(
    conn: Connection,
    clock: Clock,
    program: Mapping[str, Any],
    contact: Mapping[str, Any],
    kind: Kind,
    body: str,
    key_parts: tuple[object, ...],
    from_phone: str | None,
) -> dict[str, Any]:
    return outbox.enqueue(
        conn,
        clock,
        program_id=program["id"],
        contact_id=contact["id"],
        to_phone=contact["phone"],
        kind=kind,
        body=body,
        idempotency_key=outbox.key(kind.value, program["id"], contact["id"], *key_parts),
        from_phone=from_phone,
    )


def _message(conn: Connection, message_id: int | None) -> dict[str, Any] | None:
    if message_id is None:
        return None
    row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
    return dict(row._mapping) if row else None


def _prompt_evidence(message: Mapping[str, Any] | None) -> dict[str, Any]:
    if message is None:
        return {}
    fields = ("id", "body", "to_phone", "from_phone", "status", "provider", "provider_message_id",
              "created_at", "sent_at", "delivered_at")  # fmt: skip
    return {name: message.get(name) for name in fields}


def _jsonable(value: Any) -> Any:
    """Evidence is hashed as JSON: times become ISO strings, so the stored JSON re-hashes identically."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


__all__ = [
    "ConsentRefused",
    "SignupError",
    "Started",
    "change_disclosure",
    "confirm",
    "current_disclosure",
    "disclosure_shown",
    "double_opt_in_hook",
    "expire_due",
    "handle_inbound",
    "set_disclosure",
    "set_window",
    "start",
    "start_for_phone",
    "window",
]
