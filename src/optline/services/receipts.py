"""Delivery receipts (status callbacks): the use case behind every provider's ``/webhooks/<provider>/status``.

A receipt is never dropped (DESIGN.md invariant 3):
- It names its message by provider + provider message id. When that message is known, the receipt moves
  it forward (never backwards: receipts arrive out of order and more than once).
- A provider may post a receipt before dispatch stored the id its send call returned (the call and the
  receipt race). Such a receipt is kept in ``pending_receipts`` and applied by ``apply_pending`` in the
  transaction in which dispatch records that id.
- A receipt that says the recipient opted out (Vonage DLR err-code 9, Plivo 200, Telnyx 40300, Twilio
  21610; each provider module's table) becomes a ledger opt-out at once, from the numbers on the receipt,
  whether or not its message ever matches: the person asked to stop, whatever we know of the message.

The numbers a receipt carries (``StatusUpdate.recipient`` / ``sender``): Twilio ``To``/``From``, Vonage
``msisdn``/``to``, Plivo ``To``/``From``, Telnyx ``to[0].phone_number``/``from.phone_number``. The simulator's
receipts carry none: an opt-out receipt from it whose message is unknown is kept and logged, not recorded.

Why a receipt and dispatch cannot miss each other: both take a lock on the receipt's key (provider +
provider message id) before reading the other's row — dispatch before writing the ids it records, the
webhook before looking the message up. On PostgreSQL it is a transaction-level advisory lock; on SQLite
every write transaction holds the database's write lock (BEGIN IMMEDIATE). Whichever commits second sees
the first: the webhook finds the message, or dispatch finds the pending receipt.

Runs inside the caller's transaction: the webhook answers 2xx only after it commits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from optline.adapters.clock import Clock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import programs as program_repo
from optline.adapters.db.database import one_of
from optline.adapters.db.tables import messages, pending_receipts, subscriptions
from optline.adapters.providers.base import StatusUpdate
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.services import consent, event_hooks
from optline.services.programs import program_for_sender

log = logging.getLogger("optline.receipts")

# How far along a message is; a receipt never moves it backwards (they arrive out of order and twice).
_RANK = {"queued": 0, "claimed": 1, "sending": 2, "sent": 3, "delivered": 4, "undelivered": 4, "failed": 4}
# The advisory-lock namespace of receipt keys (the two-int form: its keys never meet other users').
_LOCK_SPACE = 0x52435054  # "RCPT"


@dataclass
class StatusResult:
    message_id: int | None
    changed: bool
    consent_event_id: int | None = None
    note: str = ""
    pending: bool = False  # kept until its message's provider id is stored


def record_status(conn: Connection, clock: Clock, update_: StatusUpdate) -> StatusResult:
    """Apply a status callback to its message, or keep it until the message is known."""
    lock_keys(conn, update_.provider, [update_.provider_message_id])
    row = conn.execute(
        select(messages)
        .where(
            (messages.c.provider == update_.provider)
            & (messages.c.provider_message_id == update_.provider_message_id)
        )
        .with_for_update()
    ).first()
    if row is None:
        return _keep(conn, clock, update_)
    return _apply(conn, clock, dict(row._mapping), update_)


def lock_keys(conn: Connection, provider: str, provider_message_ids: list[str]) -> None:
    """Serialise receipt handling and dispatch's recording per provider message id (module docstring)."""
    if conn.dialect.name != "postgresql" or not provider_message_ids:
        return
    keys = sorted({_key(provider, pid) for pid in provider_message_ids})  # one order: no deadlocks
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS INTEGER[])) AS k ORDER BY k"),
        {"space": _LOCK_SPACE, "keys": keys},
    )


def apply_pending(conn: Connection, clock: Clock, provider: str, ids: Mapping[str, int]) -> int:
    """Apply the kept receipts of messages whose provider ids (``ids``: provider id → message id) were
    just recorded, in the caller's transaction (after ``lock_keys``); returns how many were applied."""
    if not ids:
        return 0
    kept = conn.execute(
        select(pending_receipts).where(
            pending_receipts.c.provider == provider,
            one_of(conn, pending_receipts.c.provider_message_id, sorted(ids)),
        )
    ).all()
    # In the order the message went through them (sent before delivered), whatever their arrival order.
    for receipt in sorted(kept, key=lambda r: (_RANK.get(r.status, 5), r.id)):
        msg = conn.execute(select(messages).where(messages.c.id == ids[receipt.provider_message_id])).one()
        update_ = StatusUpdate(
            provider=provider,
            provider_message_id=receipt.provider_message_id,
            status=receipt.status,
            error_code=receipt.error_code,
            error_message=receipt.error_message,
            opted_out=receipt.opted_out,
            recipient=receipt.recipient,
            sender=receipt.sender,
        )
        _apply(conn, clock, dict(msg._mapping), update_)
    if kept:
        conn.execute(delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in kept])))
    return len(kept)


def _apply(conn: Connection, clock: Clock, msg: dict[str, Any], update_: StatusUpdate) -> StatusResult:
    now = clock.now()
    result = StatusResult(msg["id"], False)
    new, old = update_.status, msg["status"]
    if new in _RANK and (_RANK[new] > _RANK.get(old, 0) or (_RANK[new] == 4 and new != old)):
        values: dict[str, Any] = {"status": new, "updated_at": now}
        if new == "delivered":
            values["delivered_at"] = now
        if update_.error_code:
            values["error_code"] = update_.error_code[:50]
        if update_.error_message:
            values["error_message"] = update_.error_message
        conn.execute(update(messages).where(messages.c.id == msg["id"]).values(**values))
        result.changed = True
        if new != old and new in event_hooks.MESSAGE_OUTCOMES:
            event_hooks.emit_message_outcome(conn, clock, {**msg, **values})
    if update_.opted_out:
        program = program_repo.get(conn, msg["program_id"])
        if program is not None:
            status, _ = consent.current(conn, msg["contact_id"], program)
            if status is not Status.UNSUBSCRIBED:
                change = consent.record(
                    conn,
                    clock,
                    contact_id=msg["contact_id"],
                    program=program,
                    action=Action.OPT_OUT,
                    channel=Channel.PROVIDER,
                    evidence={
                        "provider": update_.provider,
                        "provider_message_id": update_.provider_message_id,
                        "error_code": update_.error_code,
                        "message_id": msg["id"],
                    },
                )
                result.consent_event_id = int(change.event["id"])
    return result


def _keep(conn: Connection, clock: Clock, update_: StatusUpdate) -> StatusResult:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stored = conn.execute(
        dialect.insert(pending_receipts)
        .values(
            provider=update_.provider,
            provider_message_id=update_.provider_message_id,
            status=update_.status[:20],
            error_code=(update_.error_code or None) and update_.error_code[:50],
            error_message=update_.error_message,
            opted_out=update_.opted_out,
            recipient=(update_.recipient or None) and update_.recipient[:20],
            sender=(update_.sender or None) and update_.sender[:20],
            received_at=clock.now(),
        )
        .on_conflict_do_nothing(index_elements=["provider", "provider_message_id", "status"])
        .returning(pending_receipts.c.id)
    ).scalar()
    result = StatusResult(None, False, pending=True, note="kept until its message's provider id is stored")
    if stored is None:  # the same receipt again: already kept (and its opt-out already recorded)
        return result
    if update_.opted_out:
        result.consent_event_id = _opt_out_from_numbers(conn, clock, update_)
        if result.consent_event_id is not None:
            conn.execute(
                update(pending_receipts)
                .where(pending_receipts.c.id == stored)
                .values(consent_event_id=result.consent_event_id)
            )
    return result


def _opt_out_from_numbers(conn: Connection, clock: Clock, update_: StatusUpdate) -> int | None:
    """The person the receipt names opted out: record it now, from the receipt's own numbers.

    The program is the one that owns the sender number; when no program owns it (or the receipt has no
    sender), every program the person is subscribed to (DESIGN.md invariant 3)."""
    try:
        phone = parse_phone(update_.recipient or "")
    except InvalidPhoneNumber:
        log.error(
            "opt-out receipt %s/%s names no usable recipient number (%r): kept, not recorded",
            update_.provider,
            update_.provider_message_id,
            update_.recipient,
        )
        return None
    contact, _ = contact_repo.get_or_create(conn, phone, clock.now())
    program = _sender_program(conn, update_.sender)
    if program is not None:
        targets = [program]
    else:
        subscribed = conn.execute(
            select(subscriptions.c.program_id).where(
                subscriptions.c.contact_id == contact["id"],
                subscriptions.c.status != Status.UNSUBSCRIBED.value,
            )
        ).scalars()
        targets = [p for p in (program_repo.get(conn, pid) for pid in sorted(subscribed)) if p is not None]
    evidence = {
        "provider": update_.provider, "provider_message_id": update_.provider_message_id,
        "error_code": update_.error_code, "recipient": update_.recipient, "sender": update_.sender,
        "reason": "opt-out receipt for a message not known (yet)"
        + ("" if program is not None else "; sender matches no program: every subscribed program"),
    }  # fmt: skip
    first: int | None = None
    for target in targets:
        status, _ = consent.current(conn, contact["id"], target)
        if status is Status.UNSUBSCRIBED:
            continue
        change = consent.record(
            conn,
            clock,
            contact_id=contact["id"],
            program=target,
            action=Action.OPT_OUT,
            channel=Channel.PROVIDER,
            evidence=evidence,
        )
        first = first if first is not None else int(change.event["id"])
    return first


def _sender_program(conn: Connection, sender: str | None) -> dict[str, Any] | None:
    # The one sender rule (services/programs.py): numbers compared in normalised form on both sides.
    return program_for_sender(conn, sender) if sender else None


def _key(provider: str, provider_message_id: str) -> int:
    digest = hashlib.blake2b(f"{provider}:{provider_message_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)
