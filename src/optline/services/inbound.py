"""Recording an inbound reply and a delivery status: the use cases behind every provider's webhooks.

Both run inside the caller's transaction (the webhook's unit of work): the webhook answers 2xx only after
it commits, so an opt-out is never lost (invariant 3). Providers deliver at least once, so both are
idempotent: the inbound row is claimed first with INSERT … ON CONFLICT DO NOTHING on (provider, provider
message id), and a repeated status callback finds the message already in that state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import bulk
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import programs as program_repo
from optline.adapters.db.database import unindexed
from optline.adapters.db.tables import inbound_messages, messages
from optline.adapters.providers.base import InboundSms
from optline.domain import replies
from optline.domain.classify import Classification, Intent, classify, normalise
from optline.domain.consent import Action, Channel, Status
from optline.domain.event_hooks import EventType
from optline.domain.phones import InvalidPhoneNumber, Phone, parse_phone, read_sender
from optline.services import consent, event_hooks, outbox, receipts, signup
from optline.services.outbox import Kind
from optline.services.programs import program_for_sender

# FCC 47 CFR 64.1200(a)(10): one confirmation of an opt-out, sent within five minutes; never a loop.
CONFIRMATION_QUIET = timedelta(minutes=5)
# A reply with a request cue but no confident reading is held for review when it comes this soon after a
# marketing message: people answer a campaign within hours, and "can you not" then means the campaign.
REVIEW_CUE_WINDOW = timedelta(hours=48)

# The seam for double opt-in (services/signup.py, another issue): called when an explicit opt-in keyword
# arrives for a program with ``double_opt_in``. It receives the connection, clock, program, contact, the
# inbound row id and the reply text, and returns the consent event id it recorded (or None). Without it,
# the opt-in is recorded as the ledger rule says (pending) and no prompt is sent.
DoubleOptInHook = Callable[..., "int | None"]


@dataclass
class InboundResult:
    inbound_id: int | None
    duplicate: bool
    classification: Classification | None = None
    contact_id: int | None = None
    program_id: int | None = None
    consent_event_id: int | None = None
    replies: list[int] = field(default_factory=list)  # outbox message ids enqueued in answer
    note: str = ""


def record_inbound(
    conn: Connection,
    clock: Clock,
    sms: InboundSms,
    *,
    default_region: str = "US",
    provider_opt_out: str | None = None,
    double_opt_in: DoubleOptInHook | None = None,
) -> InboundResult:
    """Store, classify and act on one inbound SMS. ``provider_opt_out``: what the provider itself did with
    it (Twilio Advanced Opt-Out ``OptOutType``: STOP, START, HELP)."""
    now = clock.now()
    contact = _contact(conn, sms.from_phone, default_region, now)
    owner = program_for_sender(conn, sms.to_phone, default_region)
    program = owner or _fallback_program(conn, contact)
    locale = (contact or {}).get("locale")
    result = classify(sms.body, language_hint=locale)
    if result.intent is Intent.OTHER and program and _is_join_keyword(sms.body, program):
        result = Classification(Intent.OPTIN, 0.95, result.language, f"join-keyword:{normalise(sms.body)}")
    # A clear opt-out to a number of no program is not guessed onto one (the last program that texted them,
    # the only program): it stops everything the person is subscribed to, and waits in the review queue.
    unrouted = owner is None and contact is not None and result.intent is Intent.OPTOUT and not result.review
    if unrouted:
        program = None

    inbound_id = _claim(
        conn, sms, contact, program, result, now, review=result.review or unrouted, attribute=not unrouted
    )
    if inbound_id is None:
        return InboundResult(None, duplicate=True, note="already recorded (provider retried)")
    if (
        result.review or unrouted
    ):  # an operator must decide: pushed to endpoints that asked, in this transaction
        event_hooks.emit(
            conn,
            clock,
            EventType.REVIEW_NEEDED,
            {
                "inbound_id": inbound_id,
                "contact_id": contact and contact["id"],
                "phone": (contact or {}).get("phone") or sms.from_phone,
                "to_phone": sms.to_phone,
                "body": sms.body,
                "program_id": program and program["id"],
                "reason": unrouted_reason(sms.to_phone) if unrouted else result.reason,
                "received_at": (sms.received_at or now).isoformat(),
            },
        )
    outcome = InboundResult(
        inbound_id, False, result, contact["id"] if contact else None, program["id"] if program else None
    )
    evidence = {
        "message_text": sms.body, "provider": sms.provider, "provider_message_id": sms.provider_message_id,
        "inbound_id": inbound_id, "classifier": result.reason,
    }  # fmt: skip
    if unrouted:
        assert contact is not None
        event_id = _revoke_all(
            conn, clock, sms, contact, result, evidence, provider_opt_out, default_region, outcome
        )
        conn.execute(
            update(inbound_messages)
            .where(inbound_messages.c.id == inbound_id)
            .values(consent_event_id=event_id)
        )
        outcome.consent_event_id = event_id
        return outcome
    if contact is None or program is None:
        outcome.note = "no contact (sender is not a phone number)" if contact is None else "no program"
        return outcome

    # A join keyword, or the yes to a pending double opt-in, belongs to the sign-up flow (services/signup.py);
    # STOP and HELP never do (signup reserves them), so they still reach _act.
    if signup.handle_inbound(
        conn,
        clock,
        program=program,
        contact=contact,
        text=sms.body,
        evidence={
            **evidence,
            "from_phone": contact["phone"],
            "to_phone": sms.to_phone,
            "received_at": (sms.received_at or now).isoformat(),
        },
    ):
        outcome.note = "sign-up: join keyword or confirmation"
        event_id = None
    else:
        event_id = _act(
            conn,
            clock,
            sms,
            contact,
            program,
            result,
            evidence,
            provider_opt_out,
            double_opt_in or signup.double_opt_in_hook,
            outcome,
        )
    outcome.consent_event_id = event_id
    if event_id is not None:  # (the campaign it answers was attributed when the row was claimed)
        conn.execute(_SET_EVENT, {"b_id": inbound_id, "consent_event_id": event_id})
    return outcome


_SET_EVENT = (
    update(inbound_messages)
    .where(inbound_messages.c.id == bindparam("b_id"))
    .values(consent_event_id=bindparam("consent_event_id"))
)
_SET_EVENTS_UNNESTED = bulk.update_unnested(inbound_messages, ["id"], ["consent_event_id"])  # PostgreSQL


@dataclass(frozen=True)
class Reply:
    """One inbound SMS of a batch and what its provider did with it (``record_inbound``'s arguments)."""

    sms: InboundSms
    provider_opt_out: str | None = None


def record_inbound_many(
    conn: Connection,
    clock: Clock,
    batch: list[Reply],
    *,
    default_region: str = "US",
    double_opt_in: DoubleOptInHook | None = None,
) -> list[InboundResult]:
    """``record_inbound`` for each reply, with the results it would give them one after another, in one
    transaction: the contacts of new numbers are created in one statement, then a burst of plain opt-outs (a
    person's first reply in the batch, a clear STOP to a program's number) is recorded in a few statements for
    all of them (claims, ledger, projection, confirmations: one or two each); every other reply goes through
    ``record_inbound`` after them.

    Only replies of different people are recorded together, and a person's later replies in the batch run
    after their first one, so every reply sees the writes of those before it that it could depend on."""
    parsed: list[Phone | None] = []
    for reply in batch:
        try:
            parsed.append(parse_phone(reply.sms.from_phone, default_region))
        except InvalidPhoneNumber:
            parsed.append(None)
    known = contact_repo.get_by_phones(conn, sorted({p.e164 for p in parsed if p is not None}))
    # A number of no contact yet (never imported, ported, recycled) gets one, as record_inbound's first step
    # gives it one whatever the reply says (even a reply the provider delivered twice): all of a batch's at
    # once, before anything reads them. Their plain STOPs then join the known people's below.
    fresh: set[int] = set()
    new = [p for p in parsed if p is not None and p.e164 not in known]
    if new:
        created, fresh = contact_repo.create_many(conn, new, clock.now())
        known.update(created)
    plain: list[tuple[int, Reply, dict[str, Any], dict[str, Any], Classification]] = []
    seen: set[Any] = set()
    # The program of each number texted, asked once per batch: a burst's replies go to a few numbers, and
    # each question reads the number as a phone number again. (Read-only here: the batch shares it.)
    owners: dict[str, dict[str, Any] | None] = {}
    consumable: dict[tuple[int, str], bool] = {}
    for i, (reply, phone) in enumerate(zip(batch, parsed, strict=True)):
        sms = reply.sms
        keys = {
            ("phone", phone.e164 if phone else sms.from_phone),
            ("id", sms.provider, sms.provider_message_id),
        }
        first = not (keys & seen)
        seen |= keys
        contact = known.get(phone.e164) if phone is not None else None
        if not first or contact is None:
            continue
        if sms.to_phone not in owners:
            owners[sms.to_phone] = program_for_sender(conn, sms.to_phone, default_region)
        program = owners[sms.to_phone]
        if program is None:
            continue
        # Asked once per program and text: a burst's replies are a few texts ("STOP"), each read by regular
        # expressions for join keywords and yeses.
        consumed = (program["id"], sms.body)
        if consumed not in consumable:
            consumable[consumed] = signup.may_consume(program, sms.body)
        if consumable[consumed]:
            continue
        result = classify(sms.body, language_hint=contact.get("locale"))
        if result.intent is Intent.OPTOUT and not result.review:
            plain.append((i, reply, contact, program, result))
    results: list[InboundResult | None] = [None] * len(batch)
    if plain:
        for i, outcome in zip((p[0] for p in plain), _opt_outs(conn, clock, plain, fresh), strict=True):
            results[i] = outcome
    for i, reply in enumerate(batch):
        if results[i] is None:
            results[i] = record_inbound(
                conn,
                clock,
                reply.sms,
                default_region=default_region,
                provider_opt_out=reply.provider_opt_out,
                double_opt_in=double_opt_in,
            )
    return [r for r in results if r is not None]


def _opt_outs(
    conn: Connection,
    clock: Clock,
    plain: list[tuple[int, Reply, dict[str, Any], dict[str, Any], Classification]],
    fresh: set[int],
) -> list[InboundResult]:
    """What ``record_inbound`` and ``_act``'s first branch do for a clear opt-out, for distinct people at once.
    ``fresh``: contacts this transaction created, who have been sent nothing, so a confirmation is due."""
    now = clock.now()
    claimed = _claim_many(
        conn, [(r.sms, contact, program, result) for _, r, contact, program, result in plain], now
    )
    outcomes: list[InboundResult] = []
    changes: list[consent.Change] = []
    acting = []
    for (_, reply, contact, program, result), inbound_id in zip(plain, claimed, strict=True):
        sms = reply.sms
        if inbound_id is None:
            outcomes.append(InboundResult(None, duplicate=True, note="already recorded (provider retried)"))
            continue
        outcome = InboundResult(inbound_id, False, result, contact["id"], program["id"])
        outcomes.append(outcome)
        evidence = {
            "message_text": sms.body, "provider": sms.provider, "provider_message_id": sms.provider_message_id,
            "inbound_id": inbound_id, "classifier": result.reason,
        }  # fmt: skip
        channel = Channel.SMS_KEYWORD if result.reason.startswith("keyword:") else Channel.SMS_TEXT
        changes.append(
            consent.Change(
                contact["id"],
                program,
                Action.OPT_OUT,
                channel,
                evidence,
                brand_wide=True if result.brand_wide else None,
            )
        )
        acting.append((reply, contact, program, result, outcome))
    if not changes:
        return outcomes
    confirmations: list[dict[str, Any]] = []
    confirming: list[InboundResult] = []
    for change, (reply, contact, program, result, outcome) in zip(
        consent.record_many(conn, clock, changes), acting, strict=True
    ):
        outcome.consent_event_id = int(change.event["id"])
        # When the provider itself stopped the number (Twilio Advanced Opt-Out), it has already answered.
        if reply.provider_opt_out != "STOP" and (
            change.was_subscribed or contact["id"] in fresh or _confirmation_due(conn, clock, contact["id"])
        ):
            brand_wide = change.event["program_id"] is None
            body = optout_confirmation(program, brand_wide=brand_wide, language=result.language)
            confirmations.append(
                _reply_values(reply.sms, contact, program, Kind.CONFIRMATION, body, "optout")
            )
            confirming.append(outcome)
    if confirmations:
        for outcome, message_id in zip(
            confirming, outbox.enqueue_many(conn, clock, confirmations), strict=True
        ):
            outcome.replies.append(message_id)
    if len(acting) > 1 and conn.dialect.name == "postgresql":  # one statement, not one per reply
        rows = [{"id": o.inbound_id, "consent_event_id": o.consent_event_id} for _, _, _, _, o in acting]
        conn.execute(_SET_EVENTS_UNNESTED, bulk.unnest_params(["id", "consent_event_id"], rows))
    else:
        sets = [{"b_id": o.inbound_id, "consent_event_id": o.consent_event_id} for _, _, _, _, o in acting]
        conn.execute(_SET_EVENT, sets[0] if len(sets) == 1 else sets)
    return outcomes


def _act(
    conn: Connection,
    clock: Clock,
    sms: InboundSms,
    contact: dict[str, Any],
    program: dict[str, Any],
    result: Classification,
    evidence: dict[str, Any],
    provider_opt_out: str | None,
    double_opt_in: DoubleOptInHook | None,
    outcome: InboundResult,
) -> int | None:
    """Apply the intent to the ledger and queue the reply; returns the consent event id (if any)."""
    cid = contact["id"]
    if result.intent is Intent.OPTOUT and not result.review:
        channel = Channel.SMS_KEYWORD if result.reason.startswith("keyword:") else Channel.SMS_TEXT
        change = consent.record(
            conn,
            clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_OUT,
            channel=channel,
            evidence=evidence,
            brand_wide=True if result.brand_wide else None,
        )
        # When the provider itself stopped the number (Twilio Advanced Opt-Out), it has already answered.
        if provider_opt_out != "STOP" and (change.was_subscribed or _confirmation_due(conn, clock, cid)):
            brand_wide = change.event["program_id"] is None
            body = optout_confirmation(program, brand_wide=brand_wide, language=result.language)
            outcome.replies.append(
                _reply(conn, clock, sms, contact, program, Kind.CONFIRMATION, body, "optout")
            )
        return int(change.event["id"])

    if provider_opt_out == "STOP":  # the provider blocked the number: agree with it in the ledger
        change = consent.record(
            conn,
            clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.PROVIDER,
            evidence={**evidence, "provider_opt_out_type": "STOP"},
        )
        return int(change.event["id"])

    status, held = consent.current(conn, cid, program)
    if result.intent is Intent.OTHER and result.review:
        return _review_cue(conn, clock, cid, program, status, held, evidence, outcome)
    if result.intent is Intent.OPTOUT:  # review: hold marketing until an operator decides
        if status in (Status.SUBSCRIBED, Status.PENDING) and not held:
            change = consent.record(
                conn,
                clock,
                contact_id=cid,
                program=program,
                action=Action.REVIEW_HOLD,
                channel=Channel.SMS_TEXT,
                evidence=evidence,
            )
            return int(change.event["id"])
        return None

    if result.intent is Intent.OPTIN:
        if status is Status.SUBSCRIBED:
            return None  # nothing changes; no second welcome
        if program.get("double_opt_in") and double_opt_in is not None:
            return double_opt_in(
                conn, clock, program=program, contact=contact, inbound_id=outcome.inbound_id, text=sms.body
            )
        change = consent.record(
            conn,
            clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_IN,
            channel=Channel.SMS_KEYWORD,
            evidence=evidence,
        )
        if change.statuses.get(program["id"], (None, None))[1] is Status.SUBSCRIBED:
            body = optin_confirmation(program, result.language)
            outcome.replies.append(
                _reply(conn, clock, sms, contact, program, Kind.CONFIRMATION, body, "optin")
            )
        return int(change.event["id"])

    if result.intent is Intent.HELP:
        outcome.replies.append(
            _reply(conn, clock, sms, contact, program, Kind.HELP, help_text(program, result.language), "help")
        )
    return None  # anything else from anyone (opted out or not) changes nothing (invariant 4)


def _revoke_all(
    conn: Connection,
    clock: Clock,
    sms: InboundSms,
    contact: dict[str, Any],
    result: Classification,
    evidence: dict[str, Any],
    provider_opt_out: str | None,
    region: str,
    outcome: InboundResult,
) -> int | None:
    """A clear opt-out sent to a number that belongs to no program: stop every program the person is
    subscribed to (consent.revoke_all), with the reason in the evidence. Returns the first event's id."""
    channel = Channel.SMS_KEYWORD if result.reason.startswith("keyword:") else Channel.SMS_TEXT
    reason = unrouted_reason(sms.to_phone)
    changes = consent.revoke_all(
        conn,
        clock,
        contact_id=contact["id"],
        channel=channel,
        evidence={**evidence, "to_phone": sms.to_phone, "unrouted": reason},
    )
    outcome.note = f"unrouted opt-out ({reason}): stopped {len(changes)} brand(s); in the review queue"
    if not changes:
        return None
    # One confirmation, from the number they texted: the provider delivered the message to it through our
    # signed webhook, so it is a number of our account, and the answer lands in the thread they typed in.
    # When it is not a phone number or short code (an alphanumeric ID cannot be answered), none is sent.
    sender = read_sender(sms.to_phone, region)
    due = any(c.was_subscribed for c in changes) or _confirmation_due(conn, clock, contact["id"])
    if sender is not None and provider_opt_out != "STOP" and due:
        row = outbox.enqueue(  # filed under a program of the first brand stopped (a message needs one)
            conn,
            clock,
            program_id=min(changes[0].statuses),
            contact_id=contact["id"],
            to_phone=contact["phone"],
            from_phone=sender,
            kind=Kind.CONFIRMATION,
            body=revoke_all_confirmation([str(c.event["brand"]) for c in changes]),
            idempotency_key=outbox.key("reply", "optout", sms.provider, sms.provider_message_id),
        )
        outcome.replies.append(int(row["id"]))
    return int(changes[0].event["id"])


def unrouted_reason(to_phone: str) -> str:
    """Why an opt-out was not routed to a program (kept in the evidence of the opt-outs it caused)."""
    return f"sent to {to_phone}, which is no program's sender number or short code"


def _review_cue(
    conn: Connection,
    clock: Clock,
    contact_id: int,
    program: dict[str, Any],
    status: Status,
    held: bool,
    evidence: dict[str, Any],
    outcome: InboundResult,
) -> int | None:
    """The review tier: a request or negation about messages with no confident reading ("can you cancel
    it?", "don't text me till Monday"). Right after a marketing message it may well mean "stop": marketing is
    held until a person decides. Otherwise it is an ordinary reply and leaves the queue."""
    if status in (Status.SUBSCRIBED, Status.PENDING) and _answers_marketing(conn, clock, contact_id, program):
        if held:
            return None  # already held for an earlier reply; this one waits in the same queue
        change = consent.record(
            conn,
            clock,
            contact_id=contact_id,
            program=program,
            action=Action.REVIEW_HOLD,
            channel=Channel.SMS_TEXT,
            evidence=evidence,
        )
        return int(change.event["id"])
    conn.execute(
        update(inbound_messages).where(inbound_messages.c.id == outcome.inbound_id).values(review=False)
    )
    if outcome.classification is not None:
        outcome.classification = replace(outcome.classification, review=False)
    outcome.note = "request cue, but no recent marketing message: not held"
    return None


def _answers_marketing(conn: Connection, clock: Clock, contact_id: int, program: Mapping[str, Any]) -> bool:
    """Whether the program sent this person a marketing message within REVIEW_CUE_WINDOW."""
    last = conn.execute(
        select(
            func.max(func.coalesce(messages.c.sent_at, messages.c.handed_over_at, messages.c.created_at))
        ).where(
            (messages.c.contact_id == contact_id)
            & (messages.c.program_id == program["id"])
            & (messages.c.kind == Kind.MARKETING.value)
            & messages.c.status.in_(("sending", "sent", "delivered"))
        )
    ).scalar()
    return last is not None and clock.now() - as_utc(last) <= REVIEW_CUE_WINDOW


# --- reply texts ------------------------------------------------------------------------------------------


# In the language the reply was written in (domain/replies.py): en, es, fr, pt.


def optout_confirmation(program: Mapping[str, Any], *, brand_wide: bool, language: str | None = "en") -> str:
    return replies.optout_confirmation(
        program["brand"], program["name"], brand_wide=brand_wide, language=language
    )


def revoke_all_confirmation(brands: list[str]) -> str:
    names = " and ".join(brands) if len(brands) <= 2 else ", ".join(brands[:-1]) + f" and {brands[-1]}"
    return (
        f"{names}: you are unsubscribed from all {names} messages and will receive no more messages. "
        "Reply START to rejoin."
    )


def optin_confirmation(program: Mapping[str, Any], language: str | None = "en") -> str:
    return replies.optin_confirmation(
        program["brand"], program["name"], program["frequency_text"], language=language
    )


def help_text(program: Mapping[str, Any], language: str | None = "en") -> str:
    """A custom help text stays as configured; only the default one is translated."""
    return replies.help_reply(
        str(program["help_text"]),
        program["brand"],
        program["frequency_text"],
        program.get("help_contact"),
        language=language,
    )


def _reply(
    conn: Connection,
    clock: Clock,
    sms: InboundSms,
    contact: Mapping[str, Any],
    program: Mapping[str, Any],
    kind: Kind,
    body: str,
    purpose: str,
) -> int:
    row = outbox.enqueue(conn, clock, **_reply_values(sms, contact, program, kind, body, purpose))
    return int(row["id"])


def _reply_values(
    sms: InboundSms,
    contact: Mapping[str, Any],
    program: Mapping[str, Any],
    kind: Kind,
    body: str,
    purpose: str,
) -> dict[str, Any]:
    """``outbox.enqueue``'s arguments for a reply to ``sms``: from the number they texted, once per message."""
    return {
        "program_id": program["id"],
        "contact_id": contact["id"],
        "to_phone": contact["phone"],
        "from_phone": sms.to_phone,
        "kind": kind,
        "body": body,
        "idempotency_key": outbox.key("reply", purpose, sms.provider, sms.provider_message_id),
    }


def _confirmation_due(conn: Connection, clock: Clock, contact_id: int) -> bool:
    """True unless a confirmation went to this person within the last five minutes."""
    last = conn.execute(
        select(messages.c.created_at)
        .where((messages.c.contact_id == contact_id) & (messages.c.kind == Kind.CONFIRMATION.value))
        .order_by(messages.c.created_at.desc())
        .limit(1)
    ).scalar()
    return last is None or clock.now() - as_utc(last) >= CONFIRMATION_QUIET


# --- resolution -------------------------------------------------------------------------------------------


def _contact(conn: Connection, phone: str, region: str, now: Any) -> dict[str, Any] | None:
    try:
        parsed = parse_phone(phone, region)
    except InvalidPhoneNumber:
        return None  # alphanumeric sender or a short code: stored, but nobody to change consent for
    contact, _ = contact_repo.get_or_create(conn, parsed, now)
    return contact


def _fallback_program(conn: Connection, contact: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """When the number texted belongs to no program: the program whose messages reached this contact last
    (the reply answers it), then the only program there is."""
    if contact is not None:
        last = conn.execute(
            select(messages.c.program_id)
            .where(messages.c.contact_id == contact["id"])
            .order_by(messages.c.created_at.desc(), messages.c.id.desc())
            .limit(1)
        ).scalar()
        if last is not None:
            return program_repo.get(conn, last)
    programs = program_repo.list_all(conn)
    return programs[0] if len(programs) == 1 else None


def _is_join_keyword(body: str, program: Mapping[str, Any]) -> bool:
    words = normalise(body).upper()
    return bool(words) and words in {str(k).upper() for k in program.get("join_keywords") or []}


# The campaign this contact last received from the program (attribution for analytics): a scalar subquery
# of the claim's INSERT, so it costs no round trip of its own. It must be a search of this contact's messages
# (ix_messages_contact_time), never of every message sent: on SQLite, whose planner has no statistics to tell
# the two apart, the status test took ix_messages_claim (status, not_before) and read every sent or delivered
# message there is, for each reply (after a campaign of 100,000, 100,000 rows per STOP). Its unary "+" keeps
# the status test off any index (SQLite's documented way to disqualify a term); PostgreSQL's planner has
# statistics and chooses the contact's index by itself (and has no unary "+" for text).
def _last_campaign(contact_id: Any, program_id: Any) -> Any:
    status = unindexed(messages.c.status)
    return (
        select(messages.c.campaign_id)
        .where(
            (messages.c.contact_id == contact_id)
            & (messages.c.program_id == program_id)
            & messages.c.campaign_id.is_not(None)
            # Not IN (…): an IN list is an "expanding" parameter, rendered into the SQL again on every
            # execution.
            & ((status == "sent") | (status == "delivered"))
        )
        .order_by(messages.c.sent_at.desc().nulls_last(), messages.c.created_at.desc(), messages.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


_CLAIMS: dict[tuple[str, bool], Any] = {}


def _claim_statement(dialect_name: str, attributed: bool) -> Any:
    """INSERT … ON CONFLICT (provider, provider_message_id) DO NOTHING RETURNING id, built once per dialect
    (the statement is the same for every reply; only its parameters change)."""
    key = (dialect_name, attributed)
    if key not in _CLAIMS:
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        stmt = dialect.insert(inbound_messages)
        if attributed:
            stmt = stmt.values(
                attributed_campaign_id=_last_campaign(bindparam("a_contact"), bindparam("a_program"))
            )
        _CLAIMS[key] = stmt.on_conflict_do_nothing(
            index_elements=["provider", "provider_message_id"]
        ).returning(inbound_messages.c.id)
    return _CLAIMS[key]


def _claim(
    conn: Connection,
    sms: InboundSms,
    contact: Mapping[str, Any] | None,
    program: Mapping[str, Any] | None,
    result: Classification,
    now: Any,
    *,
    review: bool,
    attribute: bool,
) -> int | None:
    """Insert the inbound row unless the provider already delivered this message; its id, or None.
    ``attribute``: record the campaign the reply answers (a routed reply from a contact)."""
    values = _claim_values(sms, contact, program, result, now, review)
    attributed = attribute and contact is not None and program is not None
    if attributed:
        values.update(a_contact=contact and contact["id"], a_program=program and program["id"])
    return conn.execute(_claim_statement(conn.dialect.name, attributed), values).scalar()


def _claim_values(
    sms: InboundSms,
    contact: Mapping[str, Any] | None,
    program: Mapping[str, Any] | None,
    result: Classification,
    now: Any,
    review: bool,
) -> dict[str, Any]:
    return {
        "provider": sms.provider, "provider_message_id": sms.provider_message_id,
        "from_phone": (contact or {}).get("phone") or sms.from_phone[:20], "to_phone": sms.to_phone[:20],
        "body": sms.body, "contact_id": contact and contact["id"], "program_id": program and program["id"],
        "intent": result.intent.value, "confidence": f"{result.confidence:.2f}", "language": result.language[:5],
        "reason": result.reason[:200], "review": review, "received_at": sms.received_at or now,
    }  # fmt: skip


_CLAIM_COLUMNS = [
    "provider", "provider_message_id", "from_phone", "to_phone", "body", "contact_id", "program_id", "intent",
    "confidence", "language", "reason", "review", "received_at",
]  # fmt: skip
_CLAIM_ROWS = bulk.unnested(inbound_messages, _CLAIM_COLUMNS)
_CLAIM_UNNESTED = (
    postgresql.insert(inbound_messages)
    .from_select(
        [*_CLAIM_COLUMNS, "attributed_campaign_id"],
        select(
            *(_CLAIM_ROWS.c[c] for c in _CLAIM_COLUMNS),
            _last_campaign(_CLAIM_ROWS.c.contact_id, _CLAIM_ROWS.c.program_id),
        ),
    )
    .on_conflict_do_nothing(index_elements=["provider", "provider_message_id"])
    .returning(inbound_messages.c.id, inbound_messages.c.provider, inbound_messages.c.provider_message_id)
)


def _claim_many(
    conn: Connection,
    claims: list[tuple[InboundSms, Mapping[str, Any], Mapping[str, Any], Classification]],
    now: Any,
) -> list[int | None]:
    """``_claim`` (routed, attributed, not for review) of distinct messages in one statement: each one's
    inbound id, or None when the provider already delivered it."""
    if len(claims) == 1:
        sms, contact, program, result = claims[0]
        return [_claim(conn, sms, contact, program, result, now, review=False, attribute=True)]
    if conn.dialect.name == "postgresql":  # one statement text whatever the batch's size (bulk.unnested)
        values = [
            _claim_values(sms, contact, program, result, now, False)
            for sms, contact, program, result in claims
        ]
        got = {
            (r.provider, r.provider_message_id): r.id
            for r in conn.execute(_CLAIM_UNNESTED, bulk.unnest_params(_CLAIM_COLUMNS, values))
        }
        return [got.get((sms.provider, sms.provider_message_id)) for sms, _, _, _ in claims]
    # SQLite: the batch holds the write lock from its BEGIN IMMEDIATE, so nobody else can claim a message
    # between the look-up of those already there and the insert of the others, and fresh ids can be taken
    # after the largest (bulk.allocate_ids). One executemany then: an INSERT … RETURNING with the attribution
    # subquery went row by row (SQLAlchemy cannot batch such a statement), 16 statements for 16 STOPs.
    there: set[tuple[str, str]] = set()
    by_provider: dict[str, set[str]] = {}
    for sms, _, _, _ in claims:
        by_provider.setdefault(sms.provider, set()).add(sms.provider_message_id)
    for provider, message_ids in sorted(by_provider.items()):
        found = conn.execute(_CLAIMED, {"provider": provider, "ids": sorted(message_ids)}).scalars()
        there.update((provider, message_id) for message_id in found)
    fresh = [claim for claim in claims if (claim[0].provider, claim[0].provider_message_id) not in there]
    ids: dict[tuple[str, str], int] = {}
    rows = []
    for (sms, contact, program, result), new_id in zip(
        fresh, bulk.allocate_ids(conn, inbound_messages, len(fresh)), strict=True
    ):
        ids[(sms.provider, sms.provider_message_id)] = new_id
        rows.append(
            {**_claim_values(sms, contact, program, result, now, False), "id": new_id,
             "a_contact": contact["id"], "a_program": program["id"]}
        )  # fmt: skip
    if rows:
        conn.execute(_CLAIM_MANY_SQLITE, rows)
    return [ids.get((sms.provider, sms.provider_message_id)) for sms, _, _, _ in claims]


# Which of a provider's message ids are already claimed: a search of the unique index (provider,
# provider_message_id) per id. Not a row-value IN ((provider, id), …): SQLite read that as a scan of the whole
# index, every message ever received, for every batch.
_CLAIMED = select(inbound_messages.c.provider_message_id).where(
    (inbound_messages.c.provider == bindparam("provider"))
    & inbound_messages.c.provider_message_id.in_(bindparam("ids", expanding=True))
)
_CLAIM_MANY_SQLITE = sqlite.insert(inbound_messages).values(
    attributed_campaign_id=_last_campaign(bindparam("a_contact"), bindparam("a_program"))
)


# --- status callbacks -------------------------------------------------------------------------------------
# Receipts have their own module (services/receipts.py: kept when early, applied when their message's
# provider id is stored); the webhook and the demo call them through here.
record_status = receipts.record_status
StatusResult = receipts.StatusResult
