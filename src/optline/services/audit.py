"""The regular list review: find who should not be on a sendable list, say why and what to do, store it.

Each check is one set-based query (the number checks re-parse numbers with ``phonenumbers``, streamed in
batches: the current numbering plan has no SQL equivalent). A finding names the contact, the reason, what
to do and the evidence behind it. ``fix=True`` applies the safe fixes only, as ledger events or outbox
status changes, never deleting anything:

- ``hold``: a ``review_hold`` event through ``services.consent.record`` (channel ``admin``): marketing
  stops until someone clears it, and the reason is in the ledger;
- ``cancel``: a queued or deferred message to someone who can no longer receive it becomes ``cancelled``
  (the send-time check would suppress it anyway; cancelling makes the queue say so).

Findings that need a person (duplicates, stale consent, an undecided review) get advice, no automatic fix.

The computing happens in a read transaction (on SQLite it does not block the dispatcher); the run, its
findings and the fixes are then written in one short write transaction.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, exists, false, func, insert, not_, or_, select, true, update
from sqlalchemy.sql import ColumnElement

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.database import Database
from optline.adapters.db.tables import (
    audit_findings,
    audit_runs,
    consent_events,
    contacts,
    dnc_numbers,
    inbound_messages,
    messages,
    programs,
    reassigned_numbers,
    subscriptions,
)
from optline.domain.consent import REQUIRED_OPT_IN_EVIDENCE, Action, Channel, Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services.audience import express_written_consent

CONTACT_BATCH = 2000
QUEUED = ("queued", "deferred")  # waiting in the outbox, not yet claimed by a dispatcher


class Reason(StrEnum):
    NO_CONSENT_EVIDENCE = "no_consent_evidence"
    STALE_CONSENT = "stale_consent"
    SUPPRESSED_IN_QUEUE = "suppressed_in_queue"
    INVALID_NUMBER = "invalid_number"
    NOT_MOBILE = "not_mobile"
    DUPLICATE_NUMBER = "duplicate_number"
    DNC_WITHOUT_EXPRESS_CONSENT = "dnc_without_express_consent"
    REASSIGNED_AFTER_CONSENT = "reassigned_after_consent"
    REVIEW_OVERDUE = "review_overdue"


class Fix(StrEnum):
    HOLD = "hold"
    CANCEL = "cancel"


@dataclass
class Finding:
    reason: Reason
    contact_id: int | None
    phone: str | None
    program_id: int | None
    detail: str
    action: str
    proof: dict[str, Any] = field(default_factory=dict)
    fix: Fix | None = None
    message_id: int | None = None
    fixed: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reason"] = self.reason.value
        d["fix"] = self.fix.value if self.fix else None
        return d


@dataclass
class AuditConfig:
    consent_max_age: timedelta = timedelta(days=540)
    review_overdue_after: timedelta = timedelta(hours=24)
    default_region: str = "US"


@dataclass
class AuditRun:
    id: int
    trigger: str
    program: str | None
    fix: bool
    started_at: datetime
    finished_at: datetime | None
    findings: list[Finding]
    fixed: int

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(f.reason.value for f in self.findings))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "trigger": self.trigger, "program": self.program, "fix": self.fix,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "summary": self.summary, "fixed": self.fixed, "findings": [f.as_dict() for f in self.findings],
        }  # fmt: skip


# ------------------------------------------------------------------------------------------- the rules


def _evidence_incomplete() -> ColumnElement[bool]:
    """The consent event lacks a field its channel requires (domain.consent.REQUIRED_OPT_IN_EVIDENCE)."""
    clauses = []
    for channel, names in REQUIRED_OPT_IN_EVIDENCE.items():
        missing = [
            func.coalesce(func.trim(consent_events.c.evidence[n].as_string()), "") == "" for n in names
        ]
        clauses.append(and_(consent_events.c.channel == channel.value, or_(*missing)))
    return or_(
        consent_events.c.id.is_(None),
        consent_events.c.action.not_in((Action.OPT_IN.value, Action.OPT_IN_CONFIRMED.value)),
        *clauses,
    )


def _sendable(program_id: int | None) -> ColumnElement[bool]:
    """Subscriptions marketing would go to today (held ones are already out of the audience)."""
    where = and_(subscriptions.c.status == Status.SUBSCRIBED.value, subscriptions.c.held == false())
    return and_(where, subscriptions.c.program_id == program_id) if program_id else where


def _subs() -> Any:
    return (
        subscriptions.join(contacts, contacts.c.id == subscriptions.c.contact_id)
        .join(programs, programs.c.id == subscriptions.c.program_id)
        .outerjoin(consent_events, consent_events.c.id == subscriptions.c.consent_event_id)
    )


_SUB_COLUMNS = (
    subscriptions.c.contact_id, subscriptions.c.program_id, contacts.c.phone, programs.c.name.label("program"),
    subscriptions.c.consent_event_id, consent_events.c.channel, consent_events.c.occurred_at,
)  # fmt: skip


def _when(value: Any) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


# ------------------------------------------------------------------------------------------- the checks


def _no_consent_evidence(conn: Connection, program_id: int | None) -> Iterator[Finding]:
    rows = conn.execute(
        select(*_SUB_COLUMNS, consent_events.c.evidence)
        .select_from(_subs())
        .where(_sendable(program_id), _evidence_incomplete())
    )
    for r in rows:
        if r.consent_event_id is None:
            detail = f"subscribed to {r.program} with no opt-in event behind it"
        else:
            required = REQUIRED_OPT_IN_EVIDENCE.get(Channel(r.channel), ())
            missing = [n for n in required if not str((r.evidence or {}).get(n) or "").strip()]
            detail = (
                f"subscribed to {r.program} on opt-in event {r.consent_event_id} ({r.channel}) that lacks "
                f"{', '.join(missing) or 'an opt-in'}"
            )
        yield Finding(
            Reason.NO_CONSENT_EVIDENCE,
            r.contact_id,
            r.phone,
            r.program_id,
            detail,
            "hold marketing; find the sign-up record (source, disclosure shown, time) or ask the person to "
            "opt in again",
            {"consent_event_id": r.consent_event_id},
            Fix.HOLD,
        )


def _stale_consent(
    conn: Connection, program_id: int | None, now: datetime, cfg: AuditConfig
) -> Iterator[Finding]:
    cutoff = now - cfg.consent_max_age
    engaged = exists().where(
        (inbound_messages.c.contact_id == subscriptions.c.contact_id)
        & (inbound_messages.c.received_at >= cutoff)
    )
    rows = conn.execute(
        select(*_SUB_COLUMNS)
        .select_from(_subs())
        .where(_sendable(program_id), consent_events.c.occurred_at < cutoff, not_(engaged))
    )
    for r in rows:
        yield Finding(
            Reason.STALE_CONSENT,
            r.contact_id,
            r.phone,
            r.program_id,
            f"consent to {r.program} given {_when(r.occurred_at)} (older than {cfg.consent_max_age.days} days) "
            "and no reply since",
            "send a re-permission message (reply YES to keep receiving) and hold those who do not answer",
            {"consent_event_id": r.consent_event_id, "consented_at": _when(r.occurred_at)},
        )


def _brand_opt_out(contact_id: Any, brand: Any) -> ColumnElement[bool]:
    return exists().where(
        (consent_events.c.contact_id == contact_id)
        & consent_events.c.program_id.is_(None)
        & (consent_events.c.brand == brand)
        & (consent_events.c.action == Action.OPT_OUT.value)
    )


def _suppressed_in_queue(conn: Connection, program_id: int | None) -> Iterator[Finding]:
    """Opted-out or held contacts still in queued campaign messages, with the state the send-time check
    reads (the ``subscriptions`` projection) as the proof that it will suppress them."""
    opted_out = or_(
        subscriptions.c.status == Status.UNSUBSCRIBED.value,
        and_(subscriptions.c.status.is_(None), _brand_opt_out(messages.c.contact_id, programs.c.brand)),
    )
    held = and_(messages.c.kind == "marketing", subscriptions.c.held == true())
    q = (
        select(
            messages.c.id,
            messages.c.contact_id,
            messages.c.program_id,
            messages.c.to_phone,
            messages.c.kind,
            messages.c.campaign_id,
            messages.c.status.label("message_status"),
            programs.c.name.label("program"),
            subscriptions.c.status,
            subscriptions.c.held,
            subscriptions.c.since,
            subscriptions.c.last_event_id,
        )
        .select_from(
            messages.join(programs, programs.c.id == messages.c.program_id).outerjoin(
                subscriptions,
                (subscriptions.c.contact_id == messages.c.contact_id)
                & (subscriptions.c.program_id == messages.c.program_id),
            )
        )
        .where(
            messages.c.status.in_(QUEUED),
            messages.c.campaign_id.is_not(None),
            messages.c.kind.in_(("marketing", "transactional")),
            or_(opted_out, held),
        )
        .order_by(messages.c.id)
    )
    if program_id:
        q = q.where(messages.c.program_id == program_id)
    for r in conn.execute(q):
        status = r.status or Status.UNSUBSCRIBED.value  # no row: the brand-wide opt-out
        why = "opted out" if status == Status.UNSUBSCRIBED.value else "held for review"
        yield Finding(
            Reason.SUPPRESSED_IN_QUEUE,
            r.contact_id,
            r.to_phone,
            r.program_id,
            f"{why} but still in {r.message_status} {r.kind} message {r.id} of campaign {r.campaign_id}",
            "nothing will be sent (the send-time check suppresses it); cancel the message so the queue "
            "agrees",
            {
                "message_id": r.id,
                "subscription_status": status,
                "held": bool(r.held),
                "since": _when(r.since),
                "last_event_id": r.last_event_id,
                "send_time_check": f"{r.kind} needs a subscribed, unheld contact: this one is {why}",
            },
            Fix.CANCEL,
            message_id=r.id,
        )


def _dnc_without_express_consent(conn: Connection, program_id: int | None) -> Iterator[Finding]:
    rows = conn.execute(
        select(*_SUB_COLUMNS, dnc_numbers.c.source)
        .select_from(_subs().join(dnc_numbers, dnc_numbers.c.phone == contacts.c.phone))
        .where(_sendable(program_id), not_(express_written_consent(conn)))
    )
    for r in rows:
        yield Finding(
            Reason.DNC_WITHOUT_EXPRESS_CONSENT,
            r.contact_id,
            r.phone,
            r.program_id,
            f"on the Do-Not-Call list ({r.source}) and subscribed to {r.program} by {r.channel or 'no'} "
            "consent, which is not express written consent",
            "hold marketing; text only after a signed web form or keyword opt-in",
            {"consent_event_id": r.consent_event_id, "dnc_source": r.source},
            Fix.HOLD,
        )


def _reassigned_after_consent(conn: Connection, program_id: int | None) -> Iterator[Finding]:
    rows = conn.execute(
        select(*_SUB_COLUMNS, func.max(reassigned_numbers.c.disconnected_at).label("disconnected_at"))
        .select_from(_subs().join(reassigned_numbers, reassigned_numbers.c.phone == contacts.c.phone))
        .where(_sendable(program_id), reassigned_numbers.c.disconnected_at > consent_events.c.occurred_at)
        .group_by(*_SUB_COLUMNS)
    )
    for r in rows:
        yield Finding(
            Reason.REASSIGNED_AFTER_CONSENT,
            r.contact_id,
            r.phone,
            r.program_id,
            f"number disconnected {_when(r.disconnected_at)}, after the consent to {r.program} given "
            f"{_when(r.occurred_at)}: the consent was someone else's",
            "hold marketing; the new owner of the number must opt in themselves",
            {"consent_event_id": r.consent_event_id, "disconnected_at": _when(r.disconnected_at)},
            Fix.HOLD,
        )


def _review_overdue(
    conn: Connection, program_id: int | None, now: datetime, cfg: AuditConfig
) -> Iterator[Finding]:
    q = (
        select(inbound_messages, subscriptions.c.status, subscriptions.c.held)
        .outerjoin(
            subscriptions,
            (subscriptions.c.contact_id == inbound_messages.c.contact_id)
            & (subscriptions.c.program_id == inbound_messages.c.program_id),
        )
        .where(
            inbound_messages.c.review == true(),
            inbound_messages.c.review_decided_at.is_(None),
            inbound_messages.c.received_at < now - cfg.review_overdue_after,
        )
        .order_by(inbound_messages.c.received_at)
    )
    if program_id:
        q = q.where(inbound_messages.c.program_id == program_id)
    for r in conn.execute(q):
        waited = now - as_utc(r.received_at)
        # If marketing could still go out while nobody decided, holding it is the safe interim step.
        unheld = r.status == Status.SUBSCRIBED.value and not r.held and r.contact_id and r.program_id
        yield Finding(
            Reason.REVIEW_OVERDUE,
            r.contact_id,
            r.from_phone,
            r.program_id,
            f"reply {r.body[:60]!r} received {_when(r.received_at)} has waited {waited.days}d "
            f"{waited.seconds // 3600}h for a decision",
            "decide in the review queue: record the opt-out it may be, or clear it",
            {"inbound_message_id": r.id, "intent": r.intent},
            Fix.HOLD if unheld else None,
        )


_PHONE_KEY = re.compile(r"phone|mobile|cell|tel|msisdn|number", re.IGNORECASE)
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-]{7,20}$")


def _contact_batches(conn: Connection, program_id: int | None) -> Iterator[Sequence[Any]]:
    last = 0
    while True:
        q = select(contacts.c.id, contacts.c.phone, contacts.c.number_type, contacts.c.attributes)
        q = q.where(contacts.c.id > last).order_by(contacts.c.id).limit(CONTACT_BATCH)
        if program_id:
            q = q.where(
                exists().where(
                    (subscriptions.c.contact_id == contacts.c.id) & (subscriptions.c.program_id == program_id)
                )
            )
        batch = conn.execute(q).all()
        if not batch:
            return
        yield batch
        last = batch[-1].id


def _numbers(conn: Connection, program_id: int | None, cfg: AuditConfig) -> Iterator[Finding]:
    """Invalid and non-mobile numbers on sendable lists, and one number under two spellings."""
    for batch in _contact_batches(conn, program_id):
        ids = [c.id for c in batch]
        sendable: dict[int, list[Any]] = {}
        for s in conn.execute(
            select(subscriptions.c.contact_id, subscriptions.c.program_id, programs.c.name)
            .join(programs, programs.c.id == subscriptions.c.program_id)
            .where(subscriptions.c.contact_id.in_(ids), _sendable(program_id))
        ):
            sendable.setdefault(s.contact_id, []).append(s)
        spellings: dict[str, list[tuple[Any, str]]] = {}  # e164 -> (contact, where it is written)
        for c in batch:
            problem = None
            try:
                phone = parse_phone(c.phone, cfg.default_region)
                if phone.e164 != c.phone:
                    spellings.setdefault(phone.e164, []).append((c, f"its phone is stored as {c.phone!r}"))
                    problem = (Reason.INVALID_NUMBER, f"stored as {c.phone!r}, not E.164 ({phone.e164})")
                elif not phone.sms_capable:
                    problem = (
                        Reason.NOT_MOBILE,
                        f"a {phone.number_type.replace('_', ' ')} number: cannot receive SMS",
                    )
            except InvalidPhoneNumber as exc:
                problem = (Reason.INVALID_NUMBER, str(exc))
            for key, value in (c.attributes or {}).items():
                if isinstance(value, str) and _PHONE_KEY.search(key) and _PHONE_LIKE.match(value.strip()):
                    try:
                        e164 = parse_phone(value, cfg.default_region).e164
                    except InvalidPhoneNumber:
                        continue
                    if e164 != c.phone:
                        spellings.setdefault(e164, []).append((c, f"its attribute {key!r} is {value!r}"))
            if problem:
                for s in sendable.get(c.id, []):
                    action = (
                        (
                            "hold marketing; correct the number from the source or remove the contact "
                            "from the list"
                        )
                        if problem[0] is Reason.INVALID_NUMBER
                        else ("hold marketing; ask for a mobile number")
                    )
                    yield Finding(
                        problem[0],
                        c.id,
                        c.phone,
                        s.program_id,
                        f"{problem[1]} (on {s.name})",
                        action,
                        {"number_type": c.number_type},
                        Fix.HOLD,
                    )
        if spellings:
            owners = {
                r.phone: r.id
                for r in conn.execute(
                    select(contacts.c.id, contacts.c.phone).where(contacts.c.phone.in_(sorted(spellings)))
                )
            }
            for e164, holders in spellings.items():
                for c, where in holders:
                    other = owners.get(e164)
                    if other is None or other == c.id:
                        continue
                    yield Finding(
                        Reason.DUPLICATE_NUMBER,
                        c.id,
                        c.phone,
                        None,
                        f"contact {c.id} and contact {other} are the same number {e164}: {where}",
                        f"merge the two records (keep contact {other}, the E.164 one), then check that "
                        "consent and opt-outs of both apply to the one person",
                        {"same_as_contact_id": other, "e164": e164},
                    )


def find(conn: Connection, now: datetime, cfg: AuditConfig, program_id: int | None = None) -> list[Finding]:
    """Every finding, in a stable order (checks in the order of the issue)."""
    findings: list[Finding] = []
    findings += _no_consent_evidence(conn, program_id)
    findings += _stale_consent(conn, program_id, now, cfg)
    findings += _suppressed_in_queue(conn, program_id)
    findings += _numbers(conn, program_id, cfg)
    findings += _dnc_without_express_consent(conn, program_id)
    findings += _reassigned_after_consent(conn, program_id)
    findings += _review_overdue(conn, program_id, now, cfg)
    return findings


# ------------------------------------------------------------------------------------ fixing and storing


def _apply_fixes(conn: Connection, clock: Clock, run_id: int, findings: list[Finding]) -> int:
    from optline.adapters.db import programs as program_repo
    from optline.services import consent

    held: dict[tuple[int, int], str] = {}
    fixed = 0
    for f in findings:
        if f.fix is Fix.CANCEL and f.message_id is not None:
            done = conn.execute(
                update(messages)
                .where((messages.c.id == f.message_id) & messages.c.status.in_(QUEUED))
                .values(
                    status="cancelled", reason=f"audit run {run_id}: {f.reason.value}", updated_at=clock.now()
                )
            ).rowcount
            f.fixed = f"cancelled message {f.message_id}" if done else None
        elif f.fix is Fix.HOLD and f.contact_id is not None and f.program_id is not None:
            key = (f.contact_id, f.program_id)
            if key not in held:
                program = program_repo.get(conn, f.program_id)
                assert program is not None
                status, is_held = consent.current(conn, f.contact_id, program)
                if is_held or status is Status.UNSUBSCRIBED:
                    held[key] = "already held or opted out"
                else:
                    change = consent.record(
                        conn,
                        clock,
                        contact_id=f.contact_id,
                        program=program,
                        action=Action.REVIEW_HOLD,
                        channel=Channel.ADMIN,
                        brand_wide=False,
                        evidence={
                            "operator": "optline audit",
                            "note": f.detail,
                            "reason": f.reason.value,
                            "audit_run_id": run_id,
                        },
                    )
                    held[key] = f"review_hold event {change.event['id']}"
            f.fixed = held[key]
        if f.fixed:
            fixed += 1
    return fixed


def run(
    db: Database,
    clock: Clock,
    cfg: AuditConfig,
    *,
    program: Mapping[str, Any] | None = None,
    fix: bool = False,
    trigger: str = "cli",
) -> AuditRun:
    """Run the review, store it (and apply the safe fixes when ``fix``); returns the stored run.

    The checks run in a read transaction (on SQLite they do not hold the write lock the dispatcher needs);
    the run, its findings and the fixes are written in one short write transaction.
    """
    started = clock.now()
    with db.read() as conn:
        findings = find(conn, started, cfg, program["id"] if program else None)
    with db.transaction() as conn:
        return _store(conn, clock, started, findings, program=program, fix=fix, trigger=trigger)


def run_on(
    conn: Connection,
    clock: Clock,
    cfg: AuditConfig,
    *,
    program: Mapping[str, Any] | None = None,
    fix: bool = False,
    trigger: str = "api",
) -> AuditRun:
    """``run`` inside a transaction the caller already holds (an API request's)."""
    started = clock.now()
    findings = find(conn, started, cfg, program["id"] if program else None)
    return _store(conn, clock, started, findings, program=program, fix=fix, trigger=trigger)


def _store(
    conn: Connection,
    clock: Clock,
    started: datetime,
    findings: list[Finding],
    *,
    program: Mapping[str, Any] | None,
    fix: bool,
    trigger: str,
) -> AuditRun:
    program_id = program["id"] if program else None
    run_id = conn.execute(
        insert(audit_runs)
        .values(
            trigger=trigger,
            program_id=program_id,
            fix=fix,
            started_at=started,
            findings=len(findings),
            fixed=0,
            summary=dict(Counter(f.reason.value for f in findings)),
        )
        .returning(audit_runs.c.id)
    ).scalar_one()
    fixed = _apply_fixes(conn, clock, run_id, findings) if fix else 0
    finished = clock.now()
    conn.execute(
        update(audit_runs).where(audit_runs.c.id == run_id).values(finished_at=finished, fixed=fixed)
    )
    if findings:
        conn.execute(
            insert(audit_findings),
            [
                {
                    "run_id": run_id,
                    "reason": f.reason.value,
                    "contact_id": f.contact_id,
                    "phone": f.phone,
                    "program_id": f.program_id,
                    "detail": f.detail,
                    "action": f.action,
                    "proof": f.proof,
                    "fixed": f.fixed,
                }
                for f in findings
            ],
        )
    return AuditRun(
        run_id, trigger, program["name"] if program else None, fix, started, finished, findings, fixed
    )


def config_from(settings: Any) -> AuditConfig:
    return AuditConfig(
        consent_max_age=timedelta(days=settings.audit_consent_max_age_days),
        review_overdue_after=timedelta(hours=settings.review_overdue_hours),
        default_region=settings.default_region,
    )


def latest_run(conn: Connection, trigger: str | None = None) -> AuditRun | None:
    """The newest stored run with its findings (what the dashboard shows)."""
    q = select(audit_runs).order_by(audit_runs.c.started_at.desc(), audit_runs.c.id.desc()).limit(1)
    if trigger:
        q = q.where(audit_runs.c.trigger == trigger)
    r = conn.execute(q).first()
    if r is None:
        return None
    program = (
        conn.execute(select(programs.c.name).where(programs.c.id == r.program_id)).scalar()
        if r.program_id
        else None
    )
    rows = conn.execute(
        select(audit_findings).where(audit_findings.c.run_id == r.id).order_by(audit_findings.c.id)
    )
    findings = [
        Finding(
            Reason(f.reason),
            f.contact_id,
            f.phone,
            f.program_id,
            f.detail,
            f.action,
            f.proof or {},
            message_id=(f.proof or {}).get("message_id"),
            fixed=f.fixed,
        )
        for f in rows
    ]
    return AuditRun(
        r.id,
        r.trigger,
        program,
        r.fix,
        as_utc(r.started_at),
        as_utc(r.finished_at) if r.finished_at else None,
        findings,
        r.fixed,
    )


def run_scheduled_audit(container: Any) -> AuditRun | None:
    """The worker's hook: call it every loop. Rolls up new opt-outs for the report (cheap, incremental),
    and runs and stores the list review when the last scheduled run is older than
    ``OPTLINE_AUDIT_INTERVAL_HOURS``. Returns the run, or None when none was due."""
    from optline.services import analytics

    settings, clock = container.settings, container.clock
    with container.db.transaction() as conn:
        analytics.refresh(conn, clock, window_days=settings.optout_attribution_days)
    with container.db.read() as conn:
        last = conn.execute(
            select(func.max(audit_runs.c.started_at)).where(audit_runs.c.trigger == "schedule")
        ).scalar()
    if last is not None and clock.now() - as_utc(last) < timedelta(hours=settings.audit_interval_hours):
        return None
    return run(container.db, clock, config_from(settings), trigger="schedule")
