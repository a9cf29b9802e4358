"""Appending to and verifying the consent ledger (the hash chain itself lives in optline.domain.ledger).

Concurrency: an append locks its contact's row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite writers are
already serialised by ``BEGIN IMMEDIATE``), reads the chain head, and inserts ``seq + 1``. Two writers for
the same contact queue on that row lock; writers for different contacts never wait for each other, so
there is no global ledger lock to become the ceiling of the service. The unique (contact_id, seq)
constraint is the backstop: a fork cannot be stored even if a lock were skipped.

Per-contact chains alone would not notice a whole chain (or its newest events) being deleted. Two
things do: ``verify`` cross-checks the subscription projection (written with each event) against the
chains, and ``record_digest`` hashes the chain heads that moved into a digest chained to the previous one,
so ``verify`` can check that every head a digest ever recorded still exists with the same hash (this also
catches an attacker who edits the projection to match). Digests are recorded after every CLI command that
changed the ledger, by workers every few minutes and when they stop, and after a clean ``ledger verify``:
never per append, which would make every writer wait for one lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select

from optline.adapters.db import bulk
from optline.adapters.db.database import one_of
from optline.adapters.db.tables import (
    consent_event_counts,
    consent_events,
    contacts,
    ledger_checkpoints,
    ledger_digest_heads,
    ledger_digests,
    subscriptions,
)
from optline.domain import ledger as chain
from optline.domain.consent import Action, Channel

# A transaction that began before a digest but committed after it is caught by the next digest's overlap.
DIGEST_OVERLAP = timedelta(minutes=5)
# pg_advisory_xact_lock key of the digest writer ("optlineD"); no other lock in optline uses it.
DIGEST_LOCK = 0x6F70746C696E6544


_CONTACT = select(contacts.c.id).where(contacts.c.id == bindparam("contact_id"))
_LOCK_CONTACT = _CONTACT.with_for_update()


def lock_contact(conn: Connection, contact_id: int) -> None:
    """Serialise ledger appends for one contact (SQLite's writers are serialised by BEGIN IMMEDIATE)."""
    stmt = _LOCK_CONTACT if conn.dialect.name == "postgresql" else _CONTACT
    if conn.execute(stmt, {"contact_id": contact_id}).first() is None:
        raise LookupError(f"contact {contact_id} does not exist")


def append(
    conn: Connection,
    *,
    contact_id: int,
    program_id: int | None,
    brand: str,
    action: Action,
    channel: Channel,
    evidence: Mapping[str, Any],
    occurred_at: datetime,
    recorded_at: datetime,
    locked: bool = False,
    head: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Append one event to the contact's chain. The caller's transaction also writes the projection.
    ``locked``: the caller already holds the contact's lock in this transaction (``lock_contact``);
    ``head``: and read the chain's head after taking it."""
    if not locked:
        lock_contact(conn, contact_id)
    seq, prev = head if head is not None and locked else head_of(conn, contact_id)
    event = build_event(
        contact_id=contact_id,
        seq=seq + 1,
        prev_hash=prev,
        program_id=program_id,
        brand=brand,
        action=action,
        channel=channel,
        evidence=evidence,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
    )
    insert_events(conn, [event])
    return event


def build_event(*, seq: int, prev_hash: str, **fields: Any) -> dict[str, Any]:
    """An event dict with its hash; the caller must hold the contact's lock and know its head."""
    event: dict[str, Any] = {
        **fields,
        "seq": seq,
        "prev_hash": prev_hash,
        "action": Action(fields["action"]).value,
        "channel": Channel(fields["channel"]).value,
        "evidence": dict(fields["evidence"] or {}),
    }
    event["hash"] = chain.event_hash(event)
    return event


def insert_events(conn: Connection, events: list[dict[str, Any]]) -> None:
    """Insert prepared events and set each one's ``id``."""
    if not events:
        return
    if len(events) > 1 and conn.dialect.name == "sqlite":
        # SQLite, any batch: its INSERT … RETURNING in parameter order went row by row (16 statements for a
        # burst's 16 STOPs); the ids after the largest are safe there under the write lock (BEGIN IMMEDIATE).
        # The rows go as tuples (multi-row INSERTs): SQLAlchemy's executemany processed each row's every
        # parameter through its type in Python, the most of a batch's event insert. The evidence as
        # SQLAlchemy's JSON type writes it (json.dumps).
        ids = bulk.allocate_ids(conn, consent_events, len(events))
        rows = []
        for event, event_id in zip(events, ids, strict=True):
            event["id"] = event_id
            rows.append(tuple(json.dumps(event[c]) if c == "evidence" else event[c] for c in _ALL_COLUMNS))
        bulk.insert_values(conn, consent_events, _ALL_COLUMNS, rows)
        return
    if len(events) >= bulk.COPY_FROM:
        # An import's thousands of events: ids allocated first, then one COPY.
        for event, event_id in zip(events, bulk.allocate_ids(conn, consent_events, len(events)), strict=True):
            event["id"] = event_id
        bulk.copy_rows(conn, consent_events, events)
        return
    if len(events) == 1:  # one append (a reply, a page): a plain INSERT, not the executemany machinery
        events[0]["id"] = conn.execute(_INSERT_ONE, events[0]).scalar_one()
        return
    # PostgreSQL, a burst's batch: one statement text whatever its size
    by_key = {
        (r.contact_id, r.seq): r.id
        for r in conn.execute(_INSERT_UNNESTED, bulk.unnest_params(_COLUMNS, events))
    }
    for event in events:
        event["id"] = by_key[(event["contact_id"], event["seq"])]


_INSERT_ONE = insert(consent_events).returning(consent_events.c.id)
_COLUMNS = [c.name for c in consent_events.columns if c.name != "id"]
_ALL_COLUMNS = ["id", *_COLUMNS]
_UNNESTED = bulk.unnested(consent_events, _COLUMNS)
_INSERT_UNNESTED = (
    insert(consent_events)
    .from_select(_COLUMNS, select(*(_UNNESTED.c[c] for c in _COLUMNS)))
    .returning(consent_events.c.id, consent_events.c.contact_id, consent_events.c.seq)
)

_FIRST_EVENT_COLUMNS = (
    "id", "contact_id", "seq", "program_id", "brand", "action", "channel", "evidence", "occurred_at",
    "recorded_at", "prev_hash", "hash",
)  # fmt: skip


def insert_first_events(
    conn: Connection,
    *,
    program_id: int | None,
    brand: str,
    action: Action,
    channel: Channel,
    recorded_at: datetime,
    items: list[tuple[int, str, datetime]],
) -> list[int]:
    """Start the chains of contacts this transaction created: one event each, seq 1 after GENESIS, from
    ``(contact_id, evidence as canonical JSON text, occurred_at)``. Returns the events' ids, in order.

    Only for contacts nobody else can see yet (inserted by this transaction): they have no head to read and
    no lock to take. Rows are inserted as tuples (COPY on PostgreSQL), never as dicts: an import's million."""
    if not items:
        return []
    # The hash is taken over the text as given: text in any other form (a JSONB column's, say) would give
    # events whose hashes do not verify. Checked on a batch's first row: the form is systematic, not per row.
    sample = items[0][1]
    if chain.canonical_json(json.loads(sample)) != sample:
        raise ValueError(f"evidence is not in its canonical JSON text: {sample[:80]!r}")
    hash_of = chain.first_event_hasher(
        program_id=program_id,
        brand=brand,
        action=action.value,
        channel=channel.value,
        recorded_at=recorded_at,
    )
    ids = bulk.allocate_ids(conn, consent_events, len(items))
    fixed = (program_id, brand, action.value, channel.value)
    rows = [
        (event_id, cid, 1, *fixed, evidence, at, recorded_at, chain.GENESIS, hash_of(cid, evidence, at))
        for event_id, (cid, evidence, at) in zip(ids, items, strict=True)
    ]
    bulk.insert_values(conn, consent_events, _FIRST_EVENT_COLUMNS, rows)
    return ids


HEAD = (
    select(consent_events.c.seq, consent_events.c.hash)
    .where(consent_events.c.contact_id == bindparam("contact_id"))
    .order_by(consent_events.c.seq.desc())
    .limit(1)
)


def head_of(conn: Connection, contact_id: int) -> tuple[int, str]:
    """(seq, hash) of one contact's newest event (0, GENESIS when it has none): one probe of the unique
    (contact_id, seq) index."""
    row = conn.execute(HEAD, {"contact_id": contact_id}).first()
    return (row.seq, row.hash) if row else (0, chain.GENESIS)


def heads(conn: Connection, contact_ids: list[int]) -> dict[int, tuple[int, str]]:
    """contact_id -> (seq, hash) of the newest event, for contacts that have any."""
    if not contact_ids:
        return {}
    latest = (
        select(consent_events.c.contact_id, func.max(consent_events.c.seq).label("seq"))
        .where(one_of(conn, consent_events.c.contact_id, contact_ids))
        .group_by(consent_events.c.contact_id)
        .subquery()
    )
    rows = conn.execute(
        select(consent_events.c.contact_id, consent_events.c.seq, consent_events.c.hash).join(
            latest,
            and_(latest.c.contact_id == consent_events.c.contact_id, latest.c.seq == consent_events.c.seq),
        )
    )
    return {r.contact_id: (r.seq, r.hash) for r in rows}


def history(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(consent_events).where(consent_events.c.contact_id == contact_id).order_by(consent_events.c.seq)
    )
    return [dict(r._mapping) for r in rows]


def ordered_events(conn: Connection, batch: int = 5000) -> Iterator[Any]:
    """Every event in (contact_id, seq) order, streamed by keyset pagination (constant memory)."""
    last = (-1, -1)
    while True:
        rows = conn.execute(
            select(consent_events)
            .where(
                (consent_events.c.contact_id > last[0])
                | ((consent_events.c.contact_id == last[0]) & (consent_events.c.seq > last[1]))
            )
            .order_by(consent_events.c.contact_id, consent_events.c.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield row._mapping
        last = (rows[-1].contact_id, rows[-1].seq)


@dataclass
class VerifyResult:
    events: int
    chains: int
    digests: int
    breaks: list[chain.Break]

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify(conn: Connection) -> VerifyResult:
    """Recompute every chain and every digest; report each break, first one first."""
    verifier = chain.ChainVerifier()
    for event in ordered_events(conn):
        verifier.feed(event)
    breaks = list(verifier.breaks)

    digests = conn.execute(select(ledger_digests).order_by(ledger_digests.c.id)).all()
    prev = chain.GENESIS
    for d in digests:
        heads = conn.execute(
            select(
                ledger_digest_heads.c.contact_id, ledger_digest_heads.c.seq, ledger_digest_heads.c.hash
            ).where(ledger_digest_heads.c.digest_id == d.id)
        ).all()
        if d.prev_digest != prev or chain.digest_of_heads([tuple(h) for h in heads], prev) != d.digest:
            breaks.append(chain.Break(0, 0, 0, f"ledger digest {d.id} or its heads were altered"))
        prev = d.digest

    # Every head a digest recorded must still be there, unchanged: catches deleted chains and tails.
    missing = conn.execute(
        select(ledger_digest_heads.c.digest_id, ledger_digest_heads.c.contact_id, ledger_digest_heads.c.seq)
        .outerjoin(
            consent_events,
            and_(
                consent_events.c.contact_id == ledger_digest_heads.c.contact_id,
                consent_events.c.seq == ledger_digest_heads.c.seq,
                consent_events.c.hash == ledger_digest_heads.c.hash,
            ),
        )
        .where(consent_events.c.id.is_(None))
        .order_by(ledger_digest_heads.c.contact_id)
    ).all()
    for m in missing:
        reason = f"event seq {m.seq} recorded in digest {m.digest_id} is missing or changed"
        breaks.append(chain.Break(0, m.contact_id, m.seq, reason))
    breaks.extend(projection_breaks(conn, verifier.heads))
    return VerifyResult(verifier.checked, len(verifier.heads), len(digests), breaks)


def projection_breaks(conn: Connection, heads: Mapping[int, tuple[int, str]]) -> list[chain.Break]:
    """Cross-check the subscription projection against the chains: every event a subscription names (its
    last event, its consent evidence) must be in that contact's chain. The projection is written in the
    same transaction as each event, so an event it names that the chain lacks was deleted afterwards
    (the chain's head is then older than the projection). This catches a deleted newest event (an
    opt-out) before any digest was recorded; a digest catches it when the projection was edited too."""
    found: list[chain.Break] = []
    for column, role in (
        (subscriptions.c.last_event_id, "last event"),
        (subscriptions.c.consent_event_id, "consent evidence"),
    ):
        event = consent_events.alias("named")
        rows = conn.execute(
            select(
                subscriptions.c.contact_id,
                subscriptions.c.program_id,
                subscriptions.c.status,
                column.label("event_id"),
            )
            .outerjoin(event, and_(event.c.id == column, event.c.contact_id == subscriptions.c.contact_id))
            .where(column.is_not(None), event.c.id.is_(None))
        )
        for r in rows:
            seq = heads.get(r.contact_id, (0, ""))[0]
            head = f"its head is seq {seq}" if seq else "it has no events"
            reason = (
                f"the projection says {r.status} for program {r.program_id} with event {r.event_id} as its "
                f"{role}, but that event is not in the contact's chain ({head}): deleted or moved"
            )
            found.append(chain.Break(r.event_id, r.contact_id, 0, reason))  # seq 0: the event is gone
    return sorted(found, key=lambda b: (b.contact_id, b.event_id))


def newest_event_id(conn: Connection) -> int | None:
    """The highest event id (an index lookup): a cheap way to tell whether the ledger changed."""
    return conn.execute(select(func.max(consent_events.c.id))).scalar()


def _serialise_digests(conn: Connection) -> None:
    """One digest writer at a time, until its transaction ends: it must read the newest digest and
    chain onto it before anyone else reads it. PostgreSQL: a transaction-scoped advisory lock (only
    digest writers wait on it; appends never take it). SQLite: a write transaction (BEGIN IMMEDIATE)
    already holds the database's single write lock from its first statement."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(DIGEST_LOCK)))
    elif not conn.get_execution_options().get("optline_write", False):
        raise RuntimeError("record a ledger digest inside db.transaction(), which takes the write lock first")


def every_head(conn: Connection) -> list[tuple[int, int, str]]:
    """(contact_id, seq, hash) of the newest event of every chain, by contact: the first digest's heads."""
    newest = (
        select(consent_events.c.contact_id, func.max(consent_events.c.seq).label("seq"))
        .group_by(consent_events.c.contact_id)
        .subquery()
    )
    rows = conn.execute(
        select(consent_events.c.contact_id, consent_events.c.seq, consent_events.c.hash)
        .join(
            newest,
            and_(newest.c.contact_id == consent_events.c.contact_id, newest.c.seq == consent_events.c.seq),
        )
        .order_by(consent_events.c.contact_id)
    )
    return [(r.contact_id, r.seq, r.hash) for r in rows]


def heads_moved_since(conn: Connection, since: datetime) -> list[tuple[int, int, str]]:
    """(contact_id, seq, hash) of the newest event recorded since ``since`` in each chain that has one, by
    contact: the heads the next digest records. One range of ``ix_consent_events_recorded`` (the events of
    the last few minutes, however long the ledger), the newest per chain picked here: grouped in SQL, SQLite
    (no range statistics) would rather walk the whole (contact_id, seq) index than sort the few rows."""
    newest: dict[int, tuple[int, str]] = {}
    # yield_per on the statement: Connection.execution_options would change the connection itself, and
    # the digest's own INSERTs would then ask PostgreSQL for a server-side cursor.
    rows = conn.execute(
        select(consent_events.c.contact_id, consent_events.c.seq, consent_events.c.hash)
        .where(consent_events.c.recorded_at >= since)
        .execution_options(yield_per=10000)
    )
    for contact_id, seq, hash_ in rows:
        if contact_id not in newest or seq > newest[contact_id][0]:
            newest[contact_id] = (seq, hash_)
    return [(c, seq, hash_) for c, (seq, hash_) in sorted(newest.items())]


def record_digest(conn: Connection, now: datetime) -> str | None:
    """Hash the chain heads that moved since the last digest into a new, chained digest.

    Any process may call it at any time (workers, CLI commands, ``ledger verify``): writers are serialised,
    and the unique ``prev_digest`` refuses a fork. Returns the new digest, or None when nothing moved.
    """
    _serialise_digests(conn)
    last = conn.execute(select(ledger_digests).order_by(ledger_digests.c.id.desc()).limit(1)).first()
    prev = last.digest if last else chain.GENESIS
    heads = every_head(conn) if last is None else heads_moved_since(conn, last.created_at - DIGEST_OVERLAP)
    if not heads:
        return None
    digest = chain.digest_of_heads(heads, prev)
    digest_id = conn.execute(
        insert(ledger_digests)
        .values(created_at=now, chains=len(heads), prev_digest=prev, digest=digest)
        .returning(ledger_digests.c.id)
    ).scalar_one()
    for i in range(0, len(heads), 5000):
        conn.execute(
            insert(ledger_digest_heads),
            [
                {"digest_id": digest_id, "contact_id": c, "seq": s, "hash": h}
                for c, s, h in heads[i : i + 5000]
            ],
        )
    return digest


# --- Signed checkpoints (issue 16): the database side. What is signed and how lives in domain.checkpoint.


@dataclass(frozen=True, slots=True)
class DigestLink:
    id: int
    created_at: datetime
    stored: str  # the digest column as stored
    recomputed: str  # the digest recomputed from its heads, chained to the previous recomputed value


def recomputed_digests(conn: Connection) -> dict[int, DigestLink]:
    """Every digest recomputed from the heads it recorded, in one streamed pass over the heads table.

    A checkpoint is compared with the *recomputed* value: an attacker who rewrote heads but left the digest
    column alone, or rewrote both consistently, ends up with a value the signature does not cover."""
    digests = conn.execute(
        select(ledger_digests.c.id, ledger_digests.c.created_at, ledger_digests.c.digest).order_by(
            ledger_digests.c.id
        )
    ).all()
    # Heads streamed in digest order and grouped: one digest's heads in memory at a time.
    # yield_per on the statement, not the connection (which it would change for every later statement).
    rows = conn.execute(
        select(
            ledger_digest_heads.c.digest_id,
            ledger_digest_heads.c.contact_id,
            ledger_digest_heads.c.seq,
            ledger_digest_heads.c.hash,
        )
        .order_by(ledger_digest_heads.c.digest_id)
        .execution_options(yield_per=10000)
    )
    groups = groupby(rows, key=lambda r: r.digest_id)
    pending = next(groups, None)
    links: dict[int, DigestLink] = {}
    prev = chain.GENESIS
    for d in digests:
        while pending is not None and pending[0] < d.id:  # heads of a digest that is gone: skipped
            pending = next(groups, None)
        heads: list[tuple[int, int, str]] = []
        if pending is not None and pending[0] == d.id:
            heads = [(r.contact_id, r.seq, r.hash) for r in pending[1]]
            pending = next(groups, None)
        value = chain.digest_of_heads(heads, prev)
        links[d.id] = DigestLink(d.id, d.created_at, d.digest, value)
        prev = value
    return links


def newest_digest(conn: Connection) -> Any:
    return conn.execute(select(ledger_digests).order_by(ledger_digests.c.id.desc()).limit(1)).first()


def totals(conn: Connection) -> tuple[int, int]:
    """(chains, events) in the ledger now, from the counts the database keeps with every append
    (``consent_event_counts``, adapters/db/rollups.py; a chain is counted by its seq 1): a few rows, where
    counting the ledger itself read every event ever recorded at every checkpoint. They are the checkpoint's
    informative figures; what it proves rests on the digest it signs."""
    c = consent_event_counts.c
    row = conn.execute(
        select(func.coalesce(func.sum(c.chains), 0), func.coalesce(func.sum(c.events), 0))
    ).one()
    return int(row[0]), int(row[1])


def save_checkpoint(conn: Connection, *, created_at: datetime, digest_id: int, body: str) -> None:
    conn.execute(insert(ledger_checkpoints).values(created_at=created_at, digest_id=digest_id, body=body))


def checkpoint_bodies(conn: Connection) -> list[str]:
    """The local copies of every checkpoint, oldest first."""
    return list(conn.execute(select(ledger_checkpoints.c.body).order_by(ledger_checkpoints.c.id)).scalars())


def covered_seqs(conn: Connection, contact_id: int) -> list[tuple[int, int]]:
    """(digest_id, seq) of every head recorded for one contact, oldest digest first."""
    rows = conn.execute(
        select(ledger_digest_heads.c.digest_id, ledger_digest_heads.c.seq)
        .where(ledger_digest_heads.c.contact_id == contact_id)
        .order_by(ledger_digest_heads.c.digest_id)
    )
    return [(r.digest_id, r.seq) for r in rows]
