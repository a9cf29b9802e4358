"""Dispatch beside webhooks that wait for the same write lock (``serve`` on SQLite's in-process worker): while
they wait, every write transaction of the worker takes at most YIELD_BATCH messages and lets them commit first;
while none waits, a batch is claimed and checked whole. Both engines (the rule is the dispatcher's; only
SQLite's ``serve`` wires it, adapters/db/group_commit.py ``of``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, select

from optline.adapters.db.tables import messages
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container
from optline.services import recording
from optline.services.dispatch import DispatchConfig, Dispatcher
from optline.services.dispatch_model import YIELD_BATCH
from tests.integration.test_dispatch import drain, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound

PEOPLE = 30


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:
        yield server


class Webhooks:
    """Webhook units waiting (``units``), as the group commit reports them; counts the worker's give-ways."""

    def __init__(self, units: int) -> None:
        self.units, self.gave_way = units, 0

    def waiting(self) -> int:
        return self.units

    def give_way(self) -> None:
        self.gave_way += 1


@pytest.mark.parametrize("waiting", [0, 2])
def test_write_transactions_shrink_while_webhooks_wait(
    container: Container, fake: fp.FakeProviders, monkeypatch: pytest.MonkeyPatch, waiting: int
) -> None:
    outbound.seed(container, PEOPLE)
    start_campaign(container)
    webhooks = Webhooks(waiting)
    dispatcher = Dispatcher(
        container.db,
        container.clock,
        TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url),
        DispatchConfig(public_url="https://acme.test"),
        worker_id="w1",
        webhooks=webhooks,
    )
    claims: list[int] = []
    writes: list[int] = []  # messages per status write: the check's 'sending' marks, the recorder's results
    claim, write = dispatcher.claim, recording.write

    def counted_claim(conn: Connection, now: Any, limit: int) -> list[dict[str, Any]]:
        rows = claim(conn, now, limit)
        claims.append(len(rows))
        return rows

    def counted_write(conn: Connection, *args: Any, **kwargs: Any) -> set[int]:
        writes.append(len(args[1]))
        return write(conn, *args, **kwargs)

    monkeypatch.setattr(dispatcher, "claim", counted_claim)
    monkeypatch.setattr(recording, "write", counted_write)
    counts = drain(dispatcher)
    dispatcher.close()

    assert counts.sent == PEOPLE
    with container.db.read() as conn:
        assert set(conn.execute(select(messages.c.status)).scalars()) == {"sent"}
    if waiting:
        assert max(claims) <= YIELD_BATCH and max(writes) <= YIELD_BATCH
        # It gave way before every claim and before each claim's check (stores come on top).
        assert webhooks.gave_way >= 2 * len([c for c in claims if c])
    else:
        assert max(claims) == PEOPLE and max(writes) == PEOPLE  # one claim, one check of the whole batch


def test_a_failed_check_part_still_hands_over_the_parts_already_checked(
    container: Container, fake: fp.FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked in parts (webhooks waiting): the first part is committed 'sending' before the second fails.
    # It is handed over now; the second part's messages stay claimed (their lease), as after a failed check.
    outbound.seed(container, 2 * YIELD_BATCH)
    start_campaign(container)
    dispatcher = Dispatcher(
        container.db,
        container.clock,
        TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url),
        DispatchConfig(public_url="https://acme.test", batch_size=2 * YIELD_BATCH),
        worker_id="w1",
        webhooks=Webhooks(1),
    )
    check, calls = dispatcher.check, []

    def second_fails(conn: Connection, claimed: list[dict[str, Any]], *args: Any) -> Any:
        calls.append(len(claimed))
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return check(conn, claimed, *args)

    monkeypatch.setattr(dispatcher, "_write_size", lambda wanted: min(wanted, YIELD_BATCH))
    monkeypatch.setattr(dispatcher, "_batch_limit", lambda: 2 * YIELD_BATCH)
    monkeypatch.setattr(dispatcher, "check", second_fails)
    dispatcher.run_once()
    dispatcher.close()
    with container.db.read() as conn:
        statuses = sorted(conn.execute(select(messages.c.status)).scalars())
    assert calls == [YIELD_BATCH, YIELD_BATCH]
    assert statuses == ["claimed"] * YIELD_BATCH + ["sent"] * YIELD_BATCH
    assert len(fake.received) == YIELD_BATCH
