"""The embedded simulator: "sending" writes the message to ``simulator_messages`` (direction ``out``).

The sid is derived from the idempotency key, so a resend of the same message cannot store a second copy
and ``find_sent`` is an exact lookup.

Like a provider, the simulated network answers each message with a delivery receipt: ``receipts`` (wired by
the composition root to the same use case the ``/webhooks/<provider>/status`` routes run) is called with a
``delivered`` status as soon as the message is stored. It arrives before dispatch has recorded the sid — the
race real providers produce when the receipt beats the send call's answer — so it is kept and applied in the
transaction that records the sid. The receipt is written in the transaction that stores the message: one
write per message, not two (each took SQLite's one write lock, beside the webhooks, in ``serve``).

In ``serve`` on SQLite its writes share the write lock with the webhooks' group commit: each lets the units
already waiting there commit first (adapters/db/group_commit.py ``of``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import datetime

import aiohttp
from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from optline.adapters.clock import Clock
from optline.adapters.db import group_commit
from optline.adapters.db.database import Database
from optline.adapters.db.tables import simulator_messages
from optline.adapters.providers.base import OutboundSms, SendResult, StatusUpdate

SIMULATOR_NUMBER = "+15005550006"


def sid_for(idempotency_key: str) -> str:
    return "SM" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


class SimulatorSender:
    name = "simulator"
    reconcile_after = 0.0  # find_sent is an exact lookup in the database

    def __init__(
        self, db: Database, clock: Clock, receipts: Callable[[Connection, StatusUpdate], object] | None = None
    ) -> None:
        """``receipts(conn, update)``: records a status callback in the caller's transaction."""
        self._db, self._clock, self._receipts = db, clock, receipts
        self._webhooks = group_commit.of(db)

    async def send(self, http: aiohttp.ClientSession, sms: OutboundSms) -> SendResult:
        # The database is synchronous: off the event loop, so the loop's other calls go on meanwhile.
        return await asyncio.to_thread(self._store, sms)

    def _store(self, sms: OutboundSms) -> SendResult:
        sid = sid_for(sms.idempotency_key)
        dialect = postgresql if self._db.engine.dialect.name == "postgresql" else sqlite
        if self._webhooks is not None:
            self._webhooks.give_way()
        with self._db.transaction() as conn:
            conn.execute(
                dialect.insert(simulator_messages)
                .values(
                    direction="out",
                    sid=sid,
                    from_phone=sms.from_ or SIMULATOR_NUMBER,
                    to_phone=sms.to,
                    body=sms.body,
                    status="delivered",
                    created_at=self._clock.now(),
                )
                .on_conflict_do_nothing(
                    index_elements=["sid"]
                )  # already "sent": the same message, the same sid
            )
            if self._receipts is not None:  # providers post receipts at least once: a resend posts it again
                self._receipts(
                    conn, StatusUpdate(provider=self.name, provider_message_id=sid, status="delivered")
                )
        return SendResult(sid, "sent")

    async def find_sent(self, http: aiohttp.ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        return await asyncio.to_thread(self._find, sms)

    def _find(self, sms: OutboundSms) -> str | None:
        sid = sid_for(sms.idempotency_key)
        with self._db.read() as conn:
            found = conn.execute(
                select(simulator_messages.c.sid).where(simulator_messages.c.sid == sid)
            ).first()
        return sid if found else None
