"""Recording a consent change: the ledger event and the subscription projection, in one transaction.

This is the only code path that writes ``consent_events`` or ``subscriptions``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, any_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db import bulk, ledger
from optline.adapters.db.database import one_of, unindexed
from optline.adapters.db.tables import consent_events, contacts, subscriptions
from optline.adapters.db.tables import programs as programs_table
from optline.domain.consent import (
    Action,
    Channel,
    ConsentRefused,
    OptOutScope,
    Status,
    check_opt_in_time,
    held_after,
    missing_evidence,
    next_status,
)
from optline.domain.event_hooks import EventType
from optline.services import event_hooks

# The ledger actions pushed to webhook endpoints (review holds are internal; "review.needed" is emitted
# where a reply enters the review queue, services/inbound.py).
HOOK_EVENTS = {
    Action.OPT_OUT: EventType.OPT_OUT,
    Action.OPT_IN: EventType.OPT_IN,
    Action.OPT_IN_CONFIRMED: EventType.OPT_IN_CONFIRMED,
}


@dataclass
class ConsentChange:
    event: dict[str, Any]
    # program_id -> (status before, status after)
    statuses: dict[int, tuple[Status, Status]] = field(default_factory=dict)

    @property
    def was_subscribed(self) -> bool:
        return any(before in (Status.SUBSCRIBED, Status.PENDING) for before, _ in self.statuses.values())


_SUBSCRIPTION = select(subscriptions.c.status, subscriptions.c.held).where(
    (subscriptions.c.contact_id == bindparam("contact_id"))
    & (subscriptions.c.program_id == bindparam("program_id"))
)
_BRAND_OPT_OUT = (
    select(consent_events.c.id)
    .where(
        (consent_events.c.contact_id == bindparam("contact_id"))
        & (consent_events.c.program_id.is_(None))
        & (consent_events.c.brand == bindparam("brand"))
        # Off the action index on SQLite (``unindexed``): with no statistics its planner took
        # ix_consent_events_action_time and read every opt-out ever recorded, once per person with no
        # projection row yet (every new number's STOP); the person's own events are a few rows.
        & (unindexed(consent_events.c.action) == Action.OPT_OUT.value)
    )
    .limit(1)
)


def current(conn: Connection, contact_id: int, program: Mapping[str, Any]) -> tuple[Status, bool]:
    """(status, held) of a contact for a program, as the projection says."""
    status, held, _ = _state(conn, contact_id, program)
    return status, held


def _state(conn: Connection, contact_id: int, program: Mapping[str, Any]) -> tuple[Status, bool, bool]:
    """(status, held, whether the projection has a row): the row's existence decides how it is written."""
    row = conn.execute(_SUBSCRIPTION, {"contact_id": contact_id, "program_id": program["id"]}).first()
    if row:
        return Status(row.status), bool(row.held), True
    # No row for this program yet, but a brand-wide opt-out still applies to programs created after it.
    brand_optout = conn.execute(_BRAND_OPT_OUT, {"contact_id": contact_id, "brand": program["brand"]}).first()
    return (Status.UNSUBSCRIBED if brand_optout else Status.NEVER), False, False


# The contact's id, or NULL when it does not exist: SQLite's write transaction is already the contact's lock,
# so there the existence check that ``ledger.lock_contact`` makes rides along with the state read.
_CONTACT_EXISTS = select(contacts.c.id).where(contacts.c.id == bindparam("contact_id")).scalar_subquery()
_HEAD_SEQ = ledger.HEAD.with_only_columns(consent_events.c.seq).scalar_subquery()
_HEAD_HASH = ledger.HEAD.with_only_columns(consent_events.c.hash).scalar_subquery()

_STATE_AND_HEAD = select(
    select(subscriptions.c.status)
    .where(
        (subscriptions.c.contact_id == bindparam("contact_id"))
        & (subscriptions.c.program_id == bindparam("program_id"))
    )
    .scalar_subquery()
    .label("status"),
    select(subscriptions.c.held)
    .where(
        (subscriptions.c.contact_id == bindparam("contact_id"))
        & (subscriptions.c.program_id == bindparam("program_id"))
    )
    .scalar_subquery()
    .label("held"),
    _BRAND_OPT_OUT.scalar_subquery().label("brand_opt_out"),
    _HEAD_SEQ.label("seq"),
    _HEAD_HASH.label("hash"),
    _CONTACT_EXISTS.label("contact"),
)

# Every program of a brand with this contact's projection row (if any), the brand-wide opt-out and the chain
# head: a brand-wide change reads what it extends in one statement, however many programs the brand has.
_BRAND_STATES_AND_HEAD = (
    select(
        programs_table.c.id,
        subscriptions.c.status,
        subscriptions.c.held,
        _BRAND_OPT_OUT.scalar_subquery().label("brand_opt_out"),
        _HEAD_SEQ.label("seq"),
        _HEAD_HASH.label("hash"),
        _CONTACT_EXISTS.label("contact"),
    )
    .select_from(
        programs_table.outerjoin(
            subscriptions,
            (subscriptions.c.program_id == programs_table.c.id)
            & (subscriptions.c.contact_id == bindparam("contact_id")),
        )
    )
    .where(programs_table.c.brand == bindparam("brand"))
    .order_by(programs_table.c.id)
)

State = tuple[Status, bool, bool]  # (status, held, whether the projection has a row)


def _ids_in(column: Any, dialect_name: str) -> Any:
    """``column IN :ids`` of a batch: on PostgreSQL one array parameter (``= ANY``), one statement text
    whatever the batch's size (an expanding IN list is rendered again for every execution, and each size is
    another text for psycopg to prepare); on SQLite the expanding list."""
    if dialect_name == "postgresql":
        return column == any_(bindparam("ids", type_=ARRAY(column.type)))
    return column.in_(bindparam("ids", expanding=True))


# Several contacts' chain heads, one index probe each (correlated), and their existence (the rows present).
_HEADS = {
    dialect_name: select(
        contacts.c.id,
        *(
            select(column)
            .where(consent_events.c.contact_id == contacts.c.id)
            .order_by(consent_events.c.seq.desc())
            .limit(1)
            .scalar_subquery()
            .label(column.name)
            for column in (consent_events.c.seq, consent_events.c.hash)
        ),
    ).where(_ids_in(contacts.c.id, dialect_name))
    for dialect_name in ("postgresql", "sqlite")
}
_SUBSCRIPTIONS_OF = {
    dialect_name: select(
        subscriptions.c.contact_id, subscriptions.c.program_id, subscriptions.c.status, subscriptions.c.held
    ).where(_ids_in(subscriptions.c.contact_id, dialect_name))
    for dialect_name in ("postgresql", "sqlite")
}


def _state_of(row: Any) -> State:
    if row.status is not None:
        return Status(row.status), bool(row.held), True
    return (Status.UNSUBSCRIBED if row.brand_opt_out is not None else Status.NEVER), False, False


def _head_of(row: Any, contact_id: int) -> tuple[int, str]:
    if row.contact is None:
        raise LookupError(f"contact {contact_id} does not exist")
    return (row.seq, row.hash) if row.seq is not None else (0, ledger.chain.GENESIS)


def _state_and_head(
    conn: Connection, contact_id: int, program: Mapping[str, Any]
) -> tuple[State, tuple[int, str]]:
    """``_state`` and the contact's chain head in one round trip. Read after ``ledger.lock_contact``: the
    statement's snapshot then includes everything the previous holder of the lock committed."""
    row = conn.execute(
        _STATE_AND_HEAD, {"contact_id": contact_id, "program_id": program["id"], "brand": program["brand"]}
    ).one()
    return _state_of(row), _head_of(row, contact_id)


def _brand_states_and_head(
    conn: Connection, contact_id: int, brand: str
) -> tuple[dict[int, State], tuple[int, str]]:
    """``_state`` for every program of ``brand`` and the chain head, in one round trip (read after the lock,
    as ``_state_and_head``)."""
    rows = conn.execute(_BRAND_STATES_AND_HEAD, {"contact_id": contact_id, "brand": brand}).all()
    if not rows:  # pragma: no cover - the program being changed is one of its brand's
        raise LookupError(f"brand {brand!r} has no programs")
    return {row.id: _state_of(row) for row in rows}, _head_of(rows[0], contact_id)


def _opt_outs_applying_to(program: Mapping[str, Any]) -> Any:
    """Opt-out events that apply to ``program``: its own, and its brand's brand-wide ones."""
    return (consent_events.c.action == Action.OPT_OUT.value) & (
        (consent_events.c.program_id == program["id"])
        | (consent_events.c.program_id.is_(None) & (consent_events.c.brand == program["brand"]))
    )


def last_opt_out(conn: Connection, contact_id: int, program: Mapping[str, Any]) -> datetime | None:
    """When the person last opted out of ``program`` (or of its whole brand); None if never."""
    last = conn.execute(
        select(func.max(consent_events.c.occurred_at)).where(
            (consent_events.c.contact_id == contact_id) & _opt_outs_applying_to(program)
        )
    ).scalar()
    return as_utc(last) if last is not None else None


@dataclass(frozen=True)
class Change:
    """One consent change asked of ``record_many`` (the arguments of ``record``)."""

    contact_id: int
    program: Mapping[str, Any]
    action: Action
    channel: Channel
    evidence: Mapping[str, Any]
    occurred_at: datetime | None = None
    brand_wide: bool | None = None
    signup: bool = False


def record(
    conn: Connection,
    clock: Clock,
    *,
    contact_id: int,
    program: Mapping[str, Any],
    action: Action,
    channel: Channel,
    evidence: Mapping[str, Any],
    occurred_at: datetime | None = None,
    brand_wide: bool | None = None,
    signup: bool = False,
) -> ConsentChange:
    """Append the event and update the projection. Raises ConsentRefused when a rule forbids the change
    (OptedOut when an opt-in cannot bring back a person who opted out).

    ``brand_wide``: None follows the program's opt-out scope policy for opt-outs (and is program-only for
    everything else); True forces brand-wide (STOPALL, "all messages from <brand>"). ``signup``: the opt-in
    is the first step of a sign-up whose prompt asks for the person's YES (services/signup.py).
    """
    change = Change(contact_id, program, action, channel, evidence, occurred_at, brand_wide, signup)
    return record_many(conn, clock, [change])[0]


def record_many(conn: Connection, clock: Clock, changes: list[Change]) -> list[ConsentChange]:
    """``record`` for several people at once (a burst of STOPs in one group commit): the same rules, with
    the state, chain heads, events and projection rows of all of them read and written in a few statements.
    One change per contact (a second change of a person extends the first one's event: ``record`` it after);
    when one change is refused, nothing is written and the refusal is raised."""
    if len({c.contact_id for c in changes}) != len(changes):
        raise ValueError("record_many: one change per contact (record a person's next change after)")
    now = clock.now()
    scopes: list[bool] = []
    for c in changes:
        missing = missing_evidence(c.action, c.channel, dict(c.evidence))
        if missing:
            raise ConsentRefused(
                f"{c.action.value} via {c.channel.value} needs evidence: {', '.join(missing)}"
            )
        brand_wide = c.brand_wide
        if brand_wide is None:
            brand_wide = c.action is Action.OPT_OUT and c.program["optout_scope"] == OptOutScope.BRAND.value
        if brand_wide and c.action is not Action.OPT_OUT and c.action is not Action.REVIEW_HOLD:
            raise ConsentRefused("only opt-outs and review holds apply brand-wide; opt-ins are per program")
        scopes.append(brand_wide)

    if len(changes) == 1:  # one person (a page, a reply, the API): the state and head in one statement
        c, brand_wide = changes[0], scopes[0]
        if conn.dialect.name == "postgresql":  # before reading state, so the read is the state we extend
            ledger.lock_contact(conn, c.contact_id)  # (SQLite: the write transaction is the lock)
        _check_opt_in_time(conn, c, now)
        if brand_wide:
            read = [_brand_states_and_head(conn, c.contact_id, c.program["brand"])]
        else:
            state, head = _state_and_head(conn, c.contact_id, c.program)
            read = [({c.program["id"]: state}, head)]
    else:
        _lock_contacts(conn, [c.contact_id for c in changes])
        for c in changes:
            _check_opt_in_time(conn, c, now)
        read = _states_and_heads(conn, changes, scopes)

    events = []
    for c, brand_wide, (_, (seq, prev)) in zip(changes, scopes, read, strict=True):
        events.append(
            ledger.build_event(
                contact_id=c.contact_id,
                seq=seq + 1,
                prev_hash=prev,
                program_id=None if brand_wide else c.program["id"],
                brand=c.program["brand"],
                action=c.action,
                channel=c.channel,
                evidence=c.evidence,
                occurred_at=c.occurred_at or now,
                recorded_at=now,
            )
        )
    ledger.insert_events(conn, events)
    done: list[ConsentChange] = []
    writes: dict[Any, list[dict[str, Any]]] = {}
    for c, event, (before, _) in zip(changes, events, read, strict=True):
        double = bool(c.program.get("double_opt_in")) and c.channel is not Channel.IMPORT
        change = ConsentChange(event=event)
        for pid, (status, held, exists) in before.items():
            new = next_status(status, c.action, c.channel, double_opt_in=double, signup=c.signup)
            shape, params = _projection(
                c.contact_id, pid, status, new, held_after(held, c.action), event, c.action, exists
            )
            writes.setdefault(shape, []).append(params)
            change.statuses[pid] = (status, new)
        done.append(change)
    for (exists, columns), rows in writes.items():  # one statement per shape of projection write
        if exists and len(rows) > 1 and conn.dialect.name == "postgresql":
            names = sorted(columns)
            conn.execute(
                _projection_updates(frozenset(columns)),
                bulk.unnest_params(
                    [*names, "contact_id", "program_id"],
                    [{**r, "contact_id": r["b_contact"], "program_id": r["b_program"]} for r in rows],
                ),
            )
        else:
            conn.execute(_projection_write(exists, columns), rows[0] if len(rows) == 1 else rows)
    # In this transaction: the event exists exactly when the change commits. One emit per type of event,
    # not per change: who subscribes is asked once for the batch (and the payloads built only then).
    hooked: dict[EventType, list[Any]] = {}
    for c, change in zip(changes, done, strict=True):
        hook = HOOK_EVENTS.get(c.action)
        if hook is not None:
            hooked.setdefault(hook, []).append(_payload(conn, change, c.program))
    for hook, payloads in hooked.items():
        event_hooks.emit_many(conn, clock, hook, _built(payloads))
    return done


def _built(payloads: list[Any]) -> Any:
    """``emit_many``'s payloads: each one built (its queries run) only when an endpoint subscribes."""
    return lambda: [payload() for payload in payloads]


def _payload(conn: Connection, change: ConsentChange, program: Mapping[str, Any]) -> Any:
    return lambda: hook_payload(conn, change.event, program, change.statuses)


def _check_opt_in_time(conn: Connection, c: Change, now: datetime) -> None:
    if c.action in (Action.OPT_IN, Action.OPT_IN_CONFIRMED):
        last = last_opt_out(conn, c.contact_id, c.program)
        check_opt_in_time(as_utc(c.occurred_at or now), now=now, last_opt_out=last)


# Built once (every batch of a burst takes these locks): ``one_of``'s PostgreSQL form, one array parameter.
_LOCK_CONTACTS = (
    select(contacts.c.id)
    .where(_ids_in(contacts.c.id, "postgresql"))
    .order_by(contacts.c.id)
    .with_for_update()
)


def _lock_contacts(conn: Connection, contact_ids: list[int]) -> None:
    """``ledger.lock_contact`` for several: on PostgreSQL in id order, so that two batches cannot deadlock
    on each other (SQLite: the existence check alone; its write transaction is the lock)."""
    if conn.dialect.name != "postgresql":
        return  # the existence check rides along with the heads (_states_and_heads)
    found = set(conn.execute(_LOCK_CONTACTS, {"ids": contact_ids}).scalars())
    for contact_id in contact_ids:
        if contact_id not in found:
            raise LookupError(f"contact {contact_id} does not exist")


def _states_and_heads(
    conn: Connection, changes: list[Change], scopes: list[bool]
) -> list[tuple[dict[int, State], tuple[int, str]]]:
    """What ``_state_and_head`` (or ``_brand_states_and_head``) reads, for distinct contacts at once, in two
    statements whatever their number (three with a brand's programs; read after ``_lock_contacts``, as those
    are after the lock)."""
    ids = [c.contact_id for c in changes]
    brands = sorted({c.program["brand"] for c, wide in zip(changes, scopes, strict=True) if wide})
    of_brand: dict[str, list[int]] = {}
    if brands:
        for r in conn.execute(
            select(programs_table.c.id, programs_table.c.brand)
            .where(programs_table.c.brand.in_(brands))
            .order_by(programs_table.c.id)
        ):
            of_brand.setdefault(r.brand, []).append(r.id)
    heads: dict[int, tuple[int, str]] = {}
    for r in conn.execute(_HEADS[conn.dialect.name], {"ids": ids}):
        heads[r.id] = (r.seq, r.hash) if r.seq is not None else (0, ledger.chain.GENESIS)
    for contact_id in ids:  # (SQLite: this is the existence check that _lock_contacts leaves to it)
        if contact_id not in heads:
            raise LookupError(f"contact {contact_id} does not exist")
    rows = {
        (r.contact_id, r.program_id): (Status(r.status), bool(r.held), True)
        for r in conn.execute(_SUBSCRIPTIONS_OF[conn.dialect.name], {"ids": ids})
    }
    # A brand-wide opt-out matters only where a program has no projection row yet: rare in a burst of
    # replies from subscribed people, so asked person by person (a set-based form of this question had
    # both planners scan every brand-wide opt-out there is, through the action or program index).
    brand_out = {
        (c.contact_id, c.program["brand"])
        for c, wide in zip(changes, scopes, strict=True)
        if any(
            (c.contact_id, pid) not in rows
            for pid in (of_brand.get(c.program["brand"], []) if wide else [c.program["id"]])
        )
        and conn.execute(_BRAND_OPT_OUT, {"contact_id": c.contact_id, "brand": c.program["brand"]}).first()
    }
    read = []
    for c, wide in zip(changes, scopes, strict=True):
        brand = c.program["brand"]
        never = (Status.UNSUBSCRIBED if (c.contact_id, brand) in brand_out else Status.NEVER, False, False)
        pids = of_brand.get(brand, []) if wide else [c.program["id"]]
        if not pids:  # pragma: no cover - the program being changed is one of its brand's
            raise LookupError(f"brand {brand!r} has no programs")
        before = {pid: rows.get((c.contact_id, pid), never) for pid in pids}
        read.append((before, heads.get(c.contact_id, (0, ledger.chain.GENESIS))))
    return read


def hook_payload(
    conn: Connection,
    event: Mapping[str, Any],
    program: Mapping[str, Any],
    statuses: Mapping[int, tuple[Status, Status]],
    *,
    phone: str | None = None,
) -> dict[str, Any]:
    """What a webhook endpoint receives about a consent event (no evidence: it may hold message text)."""
    if phone is None:
        phone = conn.execute(select(contacts.c.phone).where(contacts.c.id == event["contact_id"])).scalar()
    brand_wide = event["program_id"] is None
    return {
        "consent_event_id": event["id"], "contact_id": event["contact_id"], "phone": phone,
        "brand": event["brand"], "program": None if brand_wide else program["name"],
        "program_id": event["program_id"], "brand_wide": brand_wide, "channel": event["channel"],
        "occurred_at": as_utc(event["occurred_at"]).isoformat(),
        "status": None if brand_wide or program["id"] not in statuses else statuses[program["id"]][1].value,
    }  # fmt: skip


def revoke_all(
    conn: Connection, clock: Clock, *, contact_id: int, channel: Channel, evidence: Mapping[str, Any]
) -> list[ConsentChange]:
    """An opt-out whose program cannot be determined (invariant 3; the FCC's revoke-all direction, 47 CFR
    64.1200(a)(10)): a brand-wide opt-out for every brand in which the person is subscribed to, or pending
    for, any program. ``evidence`` should say why it was not routed. Returns one change per brand."""
    from optline.adapters.db.tables import programs

    ledger.lock_contact(conn, contact_id)  # the subscriptions read below are the state the opt-outs extend
    rows = conn.execute(
        select(programs)
        .join(subscriptions, subscriptions.c.program_id == programs.c.id)
        .where(
            (subscriptions.c.contact_id == contact_id)
            & subscriptions.c.status.in_((Status.SUBSCRIBED.value, Status.PENDING.value))
        )
        .order_by(programs.c.brand, programs.c.id)
    )
    by_brand: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_brand.setdefault(row.brand, dict(row._mapping))
    changes = []
    for program in by_brand.values():
        changes.append(
            record(
                conn,
                clock,
                contact_id=contact_id,
                program=program,
                action=Action.OPT_OUT,
                channel=channel,
                evidence=evidence,
                brand_wide=True,
            )
        )
    return changes


def _subscription_values(
    old: Status, new: Status, held: bool, event: Mapping[str, Any], action: Action
) -> dict[str, Any]:
    """The projection row's new values after ``event`` (one place for how the projection follows events)."""
    values: dict[str, Any] = {"status": new.value, "held": held, "last_event_id": event["id"]}
    if new is not old:
        values["since"] = event["occurred_at"]
    if new is Status.SUBSCRIBED and action in (Action.OPT_IN, Action.OPT_IN_CONFIRMED):
        values["consent_event_id"] = event["id"]  # the evidence that allows sending from now on
    elif new is Status.UNSUBSCRIBED:
        values["consent_event_id"] = None
    return values


def _projection(
    contact_id: int,
    program_id: int,
    old: Status,
    new: Status,
    held: bool,
    event: Mapping[str, Any],
    action: Action,
    exists: bool,
) -> tuple[Any, dict[str, Any]]:
    """The projection row's write: its shape ``(exists, columns set)`` (``_projection_write``'s arguments)
    and parameters; ``exists`` was read under the contact's lock, in this transaction."""
    values = _subscription_values(old, new, held, event, action)
    if not exists:
        values.setdefault("since", event["occurred_at"])
    return (exists, frozenset(values)), {**values, "b_contact": contact_id, "b_program": program_id}


_PROJECTION_WRITES: dict[tuple[bool, frozenset[str]], Any] = {}


def _projection_write(exists: bool, columns: frozenset[str]) -> Any:
    """The UPDATE (or INSERT) of a projection row setting ``columns``, built once per shape: every consent
    change writes one, and building the statement cost more than running it."""
    key = (exists, columns)
    if key not in _PROJECTION_WRITES:
        values: dict[str, Any] = {c: bindparam(c) for c in sorted(columns)}
        if exists:
            _PROJECTION_WRITES[key] = (
                update(subscriptions)
                .where(
                    (subscriptions.c.contact_id == bindparam("b_contact"))
                    & (subscriptions.c.program_id == bindparam("b_program"))
                )
                .values(values)
            )
        else:
            values.update(contact_id=bindparam("b_contact"), program_id=bindparam("b_program"))
            _PROJECTION_WRITES[key] = insert(subscriptions).values(values)
    return _PROJECTION_WRITES[key]


_PROJECTION_UPDATES: dict[frozenset[str], Any] = {}


def _projection_updates(columns: frozenset[str]) -> Any:
    """PostgreSQL: the UPDATE of a batch's projection rows setting ``columns``, all rows in one statement
    (``bulk.update_unnested``), built once per shape."""
    if columns not in _PROJECTION_UPDATES:
        _PROJECTION_UPDATES[columns] = bulk.update_unnested(
            subscriptions, ["contact_id", "program_id"], sorted(columns)
        )
    return _PROJECTION_UPDATES[columns]


def subscriptions_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    from optline.adapters.db.tables import programs

    rows = conn.execute(
        select(subscriptions, programs.c.name.label("program"), programs.c.brand)
        .join(programs, programs.c.id == subscriptions.c.program_id)
        .where(subscriptions.c.contact_id == contact_id)
        .order_by(programs.c.name)
    )
    return [dict(r._mapping) for r in rows]


class BatchOptIn(NamedTuple):  # a tuple, not a frozen dataclass: an import builds a million (4x cheaper)
    contact_id: int
    # A str is the evidence already in its canonical JSON text (``domain.ledger.canonical_json``): an import
    # computes it in its parse workers, and a contact it created needs no dict at all.
    evidence: Mapping[str, Any] | str
    occurred_at: datetime

    def evidence_dict(self) -> Mapping[str, Any]:
        return json.loads(self.evidence) if isinstance(self.evidence, str) else self.evidence


@dataclass
class BatchOutcome:
    recorded: int = 0
    already_subscribed: int = 0
    held: dict[int, str] = field(default_factory=dict)  # contact id -> why no consent was recorded

    @property
    def kept_opted_out(self) -> int:
        return len(self.held)


def record_opt_ins(
    conn: Connection,
    clock: Clock,
    program: Mapping[str, Any],
    channel: Channel,
    items: list[BatchOptIn],
    *,
    created_here: frozenset[int] = frozenset(),
) -> BatchOutcome:
    """Set-based opt-ins for one program (contacts import): the same rules as ``record``, in few queries.

    Contacts must be distinct. An opt-in the rules refuse (an opted-out person; a time of consent in the
    future or before their last opt-out) is held: nothing is recorded, and ``held`` says why.
    ``created_here``: contacts this transaction inserted. No other writer can see them before it commits, so
    they need no row lock (locking writes every locked row: most of an import's rows are new contacts), and
    they have no subscription, event or chain head to read yet.
    """
    outcome = BatchOutcome()
    if not items:
        return outcome
    now = clock.now()
    fresh = [i for i in items if i.contact_id in created_here]
    if fresh:
        _start_chains(conn, clock, now, program, channel, fresh, outcome)
        if len(fresh) == len(items):
            return outcome
        items = [i for i in items if i.contact_id not in created_here]
        created_here = frozenset()
    ids = sorted(i.contact_id for i in items)
    # Contacts this transaction created have no projection row, no events and no chain yet (nobody else can
    # write for them before it commits): only the others are looked up — none at all in a fresh import.
    known = [i for i in ids if i not in created_here]
    if conn.dialect.name == "postgresql" and known:  # lock in id order: concurrent batches cannot deadlock
        conn.execute(
            select(contacts.c.id)
            .where(one_of(conn, contacts.c.id, known))
            .order_by(contacts.c.id)
            .with_for_update()
        )
    state: dict[int, tuple[Status, bool]] = {}
    brand_out: set[int] = set()
    last_out: dict[int, datetime] = {}
    heads: dict[int, tuple[int, str]] = {}
    if known:
        state = {
            r.contact_id: (Status(r.status), bool(r.held))
            for r in conn.execute(
                select(subscriptions.c.contact_id, subscriptions.c.status, subscriptions.c.held).where(
                    (subscriptions.c.program_id == program["id"])
                    & one_of(conn, subscriptions.c.contact_id, known)
                )
            )
        }
        brand_out = {
            r.contact_id
            for r in conn.execute(
                select(consent_events.c.contact_id).where(
                    one_of(conn, consent_events.c.contact_id, known)
                    & consent_events.c.program_id.is_(None)
                    & (consent_events.c.brand == program["brand"])
                    & (consent_events.c.action == Action.OPT_OUT.value)
                )
            )
        }
        last_out = {
            r.contact_id: as_utc(r.last)
            for r in conn.execute(
                select(consent_events.c.contact_id, func.max(consent_events.c.occurred_at).label("last"))
                .where(one_of(conn, consent_events.c.contact_id, known) & _opt_outs_applying_to(program))
                .group_by(consent_events.c.contact_id)
            )
        }
        heads = ledger.heads(conn, known)
    events: list[dict[str, Any]] = []
    transitions: dict[int, tuple[Status, bool, Status]] = {}
    for item in items:
        default = Status.UNSUBSCRIBED if item.contact_id in brand_out else Status.NEVER
        status, held = state.get(item.contact_id, (default, False))
        if status is Status.SUBSCRIBED:
            outcome.already_subscribed += 1
            continue
        try:
            # "They opted out" is the reason that matters when both rules refuse, so it is checked first.
            new = next_status(status, Action.OPT_IN, channel)
            check_opt_in_time(as_utc(item.occurred_at), now=now, last_opt_out=last_out.get(item.contact_id))
        except ConsentRefused as exc:
            outcome.held[item.contact_id] = str(exc)
            continue
        seq, prev = heads.get(item.contact_id, (0, ledger.chain.GENESIS))
        events.append(
            ledger.build_event(
                contact_id=item.contact_id,
                seq=seq + 1,
                prev_hash=prev,
                program_id=program["id"],
                brand=program["brand"],
                action=Action.OPT_IN,
                channel=channel,
                evidence=item.evidence_dict(),
                occurred_at=item.occurred_at,
                recorded_at=now,
            )
        )
        transitions[item.contact_id] = (status, held, new)
    ledger.insert_events(conn, events)
    inserts, updates = [], []
    for event in events:
        status, held, new = transitions[event["contact_id"]]
        values = _subscription_values(status, new, held_after(held, Action.OPT_IN), event, Action.OPT_IN)
        if event["contact_id"] in state:
            updates.append({"b_contact_id": event["contact_id"], "since": event["occurred_at"], **values})
        else:
            inserts.append({"contact_id": event["contact_id"], "program_id": program["id"], **values})
    bulk.copy_rows(conn, subscriptions, inserts)
    if updates:
        conn.execute(
            update(subscriptions)
            .where(
                (subscriptions.c.contact_id == bindparam("b_contact_id"))
                & (subscriptions.c.program_id == program["id"])
            )
            .values({k: bindparam(k) for k in updates[0] if k != "b_contact_id"}),
            updates,
        )
    outcome.recorded += len(events)
    if events:  # one query for the numbers, and only when an endpoint subscribes to opt-ins
        event_hooks.emit_many(
            conn, clock, EventType.OPT_IN, lambda: _batch_payloads(conn, events, program, transitions)
        )
    return outcome


def _start_chains(
    conn: Connection,
    clock: Clock,
    now: datetime,
    program: Mapping[str, Any],
    channel: Channel,
    items: list[BatchOptIn],
    outcome: BatchOutcome,
) -> None:
    """``record_opt_ins`` for contacts this transaction created (most of an import): the same rules, applied
    once for all of them — they have no projection row, no event and no opt-out, so each starts from
    ``Status.NEVER`` — and their events and projection rows written as tuples, never as dicts."""
    new = next_status(Status.NEVER, Action.OPT_IN, channel)
    accepted: list[tuple[int, str, datetime]] = []
    # With no opt-out to compare with, the time rule's verdict depends on the instant alone: an import's rows
    # share few distinct times of consent, so each accepted one is checked once. A refusal is not remembered:
    # its message quotes the row's own time as written.
    passed: set[datetime] = set()
    for item in items:
        if item.occurred_at not in passed:
            try:
                check_opt_in_time(as_utc(item.occurred_at), now=now, last_opt_out=None)
            except ConsentRefused as exc:
                outcome.held[item.contact_id] = str(exc)
                continue
            passed.add(item.occurred_at)
        evidence = item.evidence
        accepted.append(
            (item.contact_id, evidence if isinstance(evidence, str) else ledger.chain.canonical_json(evidence),
             item.occurred_at)
        )  # fmt: skip
    ids = ledger.insert_first_events(
        conn,
        program_id=program["id"],
        brand=program["brand"],
        action=Action.OPT_IN,
        channel=channel,
        recorded_at=now,
        items=accepted,
    )
    # The projection row as _subscription_values writes it (one place for how it follows an event), with
    # markers where each row's own event id and time go.
    event_id, at = object(), object()
    values = _subscription_values(
        Status.NEVER,
        new,
        held_after(False, Action.OPT_IN),
        {"id": event_id, "occurred_at": at},
        Action.OPT_IN,
    )
    values.setdefault("since", at)
    columns = ["contact_id", "program_id", *values]
    program_id = program["id"]
    base = [None, program_id, *values.values()]
    id_slots = [i for i, v in enumerate(base) if v is event_id]
    at_slots = [i for i, v in enumerate(base) if v is at]
    rows = []
    for eid, (cid, _, occurred) in zip(ids, accepted, strict=True):
        row = base.copy()  # the template filled in place: no generator per row
        row[0] = cid
        for i in id_slots:
            row[i] = eid
        for i in at_slots:
            row[i] = occurred
        rows.append(row)
    bulk.insert_values(conn, subscriptions, columns, rows)
    outcome.recorded += len(ids)
    if not ids:
        return

    def payloads() -> list[dict[str, Any]]:  # only when an endpoint subscribes to opt-ins
        # What hook_payload reads of an event (never the evidence: it may hold message text).
        events = [
            {"id": eid, "contact_id": cid, "program_id": program_id, "brand": program["brand"],
             "channel": channel.value, "occurred_at": occurred}
            for eid, (cid, _, occurred) in zip(ids, accepted, strict=True)
        ]  # fmt: skip
        transitions = {e["contact_id"]: (Status.NEVER, False, new) for e in events}
        return _batch_payloads(conn, events, program, transitions)

    event_hooks.emit_many(conn, clock, EventType.OPT_IN, payloads)


def _batch_payloads(
    conn: Connection,
    events: list[dict[str, Any]],
    program: Mapping[str, Any],
    transitions: Mapping[int, tuple[Status, bool, Status]],
) -> list[dict[str, Any]]:
    # A comprehension, not dict(result): a SQLAlchemy 2.1 result has keys() and dict() took it for a mapping.
    phones = {
        r.id: r.phone
        for r in conn.execute(
            select(contacts.c.id, contacts.c.phone).where(
                one_of(conn, contacts.c.id, [e["contact_id"] for e in events])
            )
        )
    }
    payloads = []
    for event in events:
        old, _, new = transitions[event["contact_id"]]
        payload = hook_payload(
            conn, event, program, {program["id"]: (old, new)}, phone=phones.get(event["contact_id"])
        )
        payloads.append(payload)
    return payloads
