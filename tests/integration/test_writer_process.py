"""The webhooks' writer process (entrypoints/api/writer_process.py), on both engines: each caller is answered
only after the writer committed its reply; a writer that dies while a reply is in its transaction answers
nobody as recorded, leaves nothing half-written, and the next reply starts a new writer that records it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from optline.adapters.db.tables import consent_events, contacts, inbound_messages
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.entrypoints.api import webhooks
from optline.entrypoints.api.writer_process import WriterGone, WriterProcess
from optline.services.inbound import Reply
from tests.support import outbound

SENDER = "+14155550100"


@pytest.fixture
def writer(container: Container, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriterProcess]:
    # The writer builds its container from the environment, as `optline serve`'s does.
    monkeypatch.setenv("OPTLINE_DATABASE_URL", container.settings.database_url)
    monkeypatch.setenv("OPTLINE_ENV", "test")
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, container.clock, sender_numbers=[SENDER])
        outbound.subscribe(
            conn, container.clock, program, outbound.insert_contacts(conn, container.clock.now(), 0, 8)
        )
    w = WriterProcess()
    yield w
    w.close()


def _stop(container: Container, i: int) -> Any:
    return webhooks._InboundUnit(
        container, Reply(InboundSms("twilio", f"SMwp{i}", outbound.phone(i), SENDER, "STOP"))
    )


def _recorded(container: Container) -> dict[str, bool]:
    """provider message id -> whether its sender has an opt-out, as another connection sees it (committed)."""
    with container.db.read() as conn:
        sids = conn.execute(select(inbound_messages.c.provider_message_id)).scalars().all()
        out = set(
            conn.execute(
                select(contacts.c.phone)
                .join(consent_events, consent_events.c.contact_id == contacts.c.id)
                .where(consent_events.c.action == "opt_out")
            ).scalars()
        )
    return {sid: outbound.phone(int(sid[4:])) in out for sid in sids}


def test_each_reply_is_answered_after_the_writer_committed_it(
    container: Container, writer: WriterProcess
) -> None:
    seen: dict[int, dict[str, bool]] = {}

    async def one(i: int) -> dict[str, Any]:
        payload: dict[str, Any] = await writer.run(_stop(container, i))
        seen[i] = _recorded(container)  # the moment the caller is answered
        return payload

    async def main() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(i) for i in range(6))))

    payloads = asyncio.run(main())
    assert [p["status"] for p in payloads] == ["recorded"] * 6
    assert all(p["consent_event_id"] for p in payloads)
    for i in range(6):
        assert seen[i].get(f"SMwp{i}") is True  # committed, opt-out included, before its answer


def _writer_waiting_on_a_lock(container: Container) -> bool:
    with container.db.read() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar())


def test_a_writer_killed_inside_its_transaction_answers_nobody_and_the_next_reply_starts_another(
    container: Container, writer: WriterProcess
) -> None:
    writer.start()
    first_pid = writer.pid
    assert first_pid is not None

    async def main() -> BaseException | None:
        # Hold what the writer's transaction needs: PostgreSQL, the person's row (the writer has inserted the
        # inbound message, then waits to lock them: the worst instant, written and not committed); SQLite,
        # the write lock (the writer waits to begin).
        with container.db.transaction() as conn:
            if container.db.is_sqlite:
                conn.execute(text("UPDATE contacts SET locale = locale WHERE 0"))
            else:
                conn.execute(
                    select(contacts.c.id).where(contacts.c.phone == outbound.phone(7)).with_for_update()
                )
            task = asyncio.ensure_future(writer.run(_stop(container, 7)))
            await asyncio.sleep(0)  # the job is handed over
            if not container.db.is_sqlite:
                deadline = time.monotonic() + 60  # bounded: a writer that never gets there fails the test
                while not _writer_waiting_on_a_lock(container) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert _writer_waiting_on_a_lock(container)
            os.kill(first_pid, signal.SIGKILL)
            outcome = await asyncio.gather(task, return_exceptions=True)
        return outcome[0] if isinstance(outcome[0], BaseException) else None

    error = asyncio.run(main())
    assert isinstance(error, WriterGone)  # its webhook answers 500: the provider retries
    assert "SMwp7" not in _recorded(container)  # nothing of it was committed

    async def retry() -> dict[str, Any]:
        payload: dict[str, Any] = await writer.run(_stop(container, 7))
        return payload

    assert asyncio.run(retry())["status"] == "recorded"  # a new writer took it
    assert writer.pid not in (None, first_pid)
    assert _recorded(container)["SMwp7"] is True
