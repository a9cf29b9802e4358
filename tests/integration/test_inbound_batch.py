"""A burst of inbound replies recorded together (services/inbound.py ``record_inbound_many``, the group
commit's ``run_many``), on both engines: the same results and the same ledger as one reply after another,
a person's two replies in one batch chained in order, and a failed batch costing nobody their opt-out."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, update

from optline.adapters.db import ledger
from optline.adapters.db.group_commit import GroupCommit
from optline.adapters.db.tables import (
    campaigns,
    consent_events,
    contacts,
    inbound_messages,
    messages,
    subscriptions,
    webhook_deliveries,
)
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.entrypoints.api import webhooks
from optline.services import consent, event_hooks, outbox
from optline.services import inbound as inbound_service
from optline.services.inbound import Reply, record_inbound, record_inbound_many
from optline.services.outbox import Kind
from tests.support import outbound

S1, S2, NOBODY = "+14155550100", "+14155550109", "+14155550177"
# (person, body, number texted, provider message id): each script runs once for people 0-9 (one reply at a
# time) and once for people 100-109 (one batch); people 5 and 8 opted out before.
SCRIPT = [
    (0, "STOP", S1, "a"),
    (1, "STOP", S2, "b"),  # a program whose opt-outs are brand-wide
    (2, "STOPALL", S1, "c"),  # brand-wide by its words
    (3, "HELP", S1, "d"),
    (4, "START", S1, "e"),  # already subscribed: nothing changes
    (5, "STOP", S1, "f"),  # opted out before: recorded again, one confirmation
    (0, "stop", S1, "g"),  # the same person again in the batch: chained after their first
    (6, "STOP", S1, "h"),
    (6, "STOP", S1, "h"),  # the provider delivered it twice
    (7, "Stop", S2, "i"),
    (8, "STOP", S1, "j"),
    (8, "START", S1, "k"),  # after their STOP in the same batch: back in
    (9, "STOP", NOBODY, "l"),  # to no program's number: stops everything, held for review
    (None, "STOP", S1, "m"),  # a number optline never saw
    (3, "cancel my subscription please", S1, "n"),
]


def _world(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        clock = container.clock
        p1 = outbound.make_program(conn, clock, "deals", sender_numbers=[S1])
        p2 = outbound.make_program(conn, clock, "news", sender_numbers=[S2], optout_scope="brand")
        ids = outbound.insert_contacts(conn, clock.now(), 0, 10) + outbound.insert_contacts(
            conn, clock.now(), 100, 10
        )
        outbound.subscribe(conn, clock, p1, ids)
        outbound.subscribe(conn, clock, p2, ids)
        for person in (5, 8, 105, 108):
            cid = ids[person if person < 100 else person - 90]
            consent.record(
                conn,
                clock,
                contact_id=cid,
                program=p1,
                action=Action.OPT_OUT,
                channel=Channel.WEB,
                evidence={"test": True},
            )
        for person in (7, 107):  # a brand-wide opt-out before a program of the brand existed
            consent.record(
                conn,
                clock,
                contact_id=ids[person if person < 100 else person - 90],
                program=p1,
                action=Action.OPT_OUT,
                channel=Channel.WEB,
                evidence={"test": True},
                brand_wide=True,
            )
        outbound.make_program(conn, clock, "later", sender_numbers=["+14155550108"])
        # People 0 and 100 got campaign "fall", then "winter": their STOP is attributed to "winter".
        for person in (0, 100):
            cid = ids[person if person < 100 else person - 90]
            for n in ("fall", "winter"):
                campaign_id = conn.execute(
                    insert(campaigns)
                    .values(program_id=p1["id"], name=f"{n}{person}", template="hi", created_at=clock.now())
                    .returning(campaigns.c.id)
                ).scalar()
                msg = outbox.enqueue(
                    conn,
                    clock,
                    program_id=p1["id"],
                    contact_id=cid,
                    to_phone=outbound.phone(person),
                    kind=Kind.MARKETING,
                    body="Deal",
                    idempotency_key=f"c{n}{person}",
                    campaign_id=campaign_id,
                )
                clock.advance(minutes=1)  # type: ignore[attr-defined]
                conn.execute(
                    update(messages)
                    .where(messages.c.id == msg["id"])
                    .values(status="sent", sent_at=clock.now())
                )
    return {"p1": p1, "p2": p2}


def _replies(base: int) -> list[Reply]:
    out = []
    for person, body, to, mid in SCRIPT:
        sender = outbound.phone(base + person) if person is not None else outbound.phone(base + 900)
        out.append(Reply(InboundSms("twilio", f"SM{base}{mid}", sender, to, body)))
    return out


def _shape(result: inbound_service.InboundResult) -> tuple[Any, ...]:
    c = result.classification
    return (
        result.duplicate,
        c and (c.intent, c.review),
        result.note,
        result.consent_event_id is not None,
        len(result.replies),
        result.inbound_id is not None,
    )


def _state(conn: Connection, base: int) -> dict[Any, Any]:
    """Each scripted person's chain, projection rows and queued messages, independent of ids."""
    state: dict[Any, Any] = {}
    for person in [*range(10), 900]:
        cid = conn.execute(
            select(contacts.c.id).where(contacts.c.phone == outbound.phone(base + person))
        ).scalar()
        if cid is None:
            state[person] = None
            continue
        events = conn.execute(
            select(
                consent_events.c.seq,
                consent_events.c.action,
                consent_events.c.channel,
                consent_events.c.brand,
                consent_events.c.program_id,
            )
            .where(consent_events.c.contact_id == cid)
            .order_by(consent_events.c.seq)
        ).all()
        subs = conn.execute(
            select(subscriptions.c.program_id, subscriptions.c.status, subscriptions.c.held)
            .where(subscriptions.c.contact_id == cid)
            .order_by(subscriptions.c.program_id)
        ).all()
        sent = conn.execute(
            select(messages.c.kind, messages.c.body)
            .where(messages.c.contact_id == cid)
            .order_by(messages.c.id)
        ).all()
        linked = conn.execute(
            select(
                inbound_messages.c.consent_event_id.is_not(None),
                select(campaigns.c.name)
                .where(campaigns.c.id == inbound_messages.c.attributed_campaign_id)
                .scalar_subquery(),
            )
            .where(inbound_messages.c.contact_id == cid)
            .order_by(inbound_messages.c.id)
        ).all()
        state[person] = (
            [tuple(e) for e in events],
            [tuple(s) for s in subs],
            [tuple(m) for m in sent],
            [(ok, (name or "").rstrip("0123456789") or None) for ok, name in linked],
        )
    return state


def test_a_batch_gives_what_one_reply_after_another_gives(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(container)
    sizes: list[int] = []
    real = consent.record_many

    def spy(conn: Connection, clock: Any, changes: list[consent.Change]) -> list[consent.ConsentChange]:
        sizes.append(len(changes))
        return real(conn, clock, changes)

    monkeypatch.setattr(consent, "record_many", spy)
    with container.db.transaction() as conn:
        one_by_one = [record_inbound(conn, container.clock, r.sms) for r in _replies(0)]
    sizes.clear()
    with container.db.transaction() as conn:
        together = record_inbound_many(conn, container.clock, _replies(100))
    assert max(sizes) >= 5, sizes  # the plain STOPs were recorded together, not one by one
    assert [_shape(r) for r in together] == [_shape(r) for r in one_by_one]
    with container.db.read() as conn:
        alone, batched = _state(conn, 0), _state(conn, 100)
        # Programs and brands are shared; only people differ: the states must match person by person.
        assert batched == alone
        assert ledger.verify(conn).ok
    # The person who wrote twice: two opt-outs, seq 3 then 4 (after the opt-ins to both programs), one confirmation.
    events, _, sent, _ = batched[0]
    assert [(e[0], e[1]) for e in events if e[1] == "opt_out"] == [(3, "opt_out"), (4, "opt_out")]
    assert [m[0] for m in sent] == ["marketing", "marketing", "confirmation"]
    assert batched[0][3] == [(True, "winter"), (True, "winter")]  # both replies answer the last campaign


def test_two_stops_of_one_person_in_one_batch_chain_in_order(container: Container) -> None:
    _world(container)
    replies = [Reply(InboundSms("twilio", f"SMx{i}", outbound.phone(1), S1, "STOP")) for i in range(3)]
    replies.insert(1, Reply(InboundSms("twilio", "SMy", outbound.phone(2), S1, "STOP")))
    with container.db.transaction() as conn:
        results = record_inbound_many(conn, container.clock, replies)
    assert all(r.consent_event_id for r in results)
    with container.db.read() as conn:
        rows = conn.execute(
            select(
                consent_events.c.id, consent_events.c.seq, consent_events.c.prev_hash, consent_events.c.hash
            )
            .join(contacts, contacts.c.id == consent_events.c.contact_id)
            .where(contacts.c.phone == outbound.phone(1))
            .order_by(consent_events.c.seq)
        ).all()
        assert ledger.verify(conn).ok
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]  # two opt-ins (two programs), then the three STOPs
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    stops = [r.consent_event_id for i, r in enumerate(results) if i != 1]
    assert stops == [r.id for r in rows[2:]]  # each reply's event, in the order they arrived


def test_a_batch_delivered_again_is_recorded_once(container: Container) -> None:
    _world(container)
    replies = [Reply(InboundSms("twilio", f"SMr{i}", outbound.phone(i), S1, "STOP")) for i in range(5)]
    with container.db.transaction() as conn:
        first = record_inbound_many(conn, container.clock, replies)
    with container.db.transaction() as conn:  # the provider retried them all (and one new one)
        again = record_inbound_many(
            conn,
            container.clock,
            [*replies, Reply(InboundSms("twilio", "SMr9", outbound.phone(9), S1, "STOP"))],
        )
    assert all(r.consent_event_id and not r.duplicate for r in first)
    assert [r.duplicate for r in again] == [True] * 5 + [False]
    with container.db.read() as conn:
        assert len(conn.execute(select(inbound_messages.c.id)).all()) == 6
        assert len(conn.execute(select(messages.c.id).where(messages.c.kind == "confirmation")).all()) == 6


def _held_writer(group: GroupCommit, entered: threading.Event, release: threading.Event) -> Any:
    def unit(conn: Connection) -> None:
        entered.set()
        assert release.wait(30)

    return group.run(unit)


def _burst(container: Container, units: list[Callable[[Connection], Any]]) -> list[Any]:
    """Queue ``units`` behind a unit that holds the writer, so that they form one batch."""
    group = GroupCommit(container.db, writers=1)
    entered, release = threading.Event(), threading.Event()

    async def main() -> list[Any]:
        first = asyncio.create_task(_held_writer(group, entered, release))
        assert await asyncio.to_thread(entered.wait, 30)  # the writer is inside the first unit (no sleep)
        rest = [asyncio.create_task(group.run(u)) for u in units]
        await asyncio.sleep(0)  # each task's first step queues its unit
        assert group.queued() == len(units)
        release.set()
        await first
        return list(await asyncio.gather(*rest, return_exceptions=True))

    return asyncio.run(main())


def _stops(container: Container, n: int) -> list[Callable[[Connection], Any]]:
    units: list[Callable[[Connection], Any]] = []
    for i in range(n):
        sms = InboundSms("twilio", f"SMg{i}", outbound.phone(i), S1, "STOP")
        units.append(webhooks._InboundUnit(container, Reply(sms)))
    return units


def _opted_out(container: Container, n: int) -> int:
    with container.db.read() as conn:
        return len(
            set(
                conn.execute(
                    select(contacts.c.phone)
                    .join(consent_events, consent_events.c.contact_id == contacts.c.id)
                    .where(
                        contacts.c.phone.in_([outbound.phone(i) for i in range(n)])
                        & (consent_events.c.action == "opt_out")
                        & (consent_events.c.channel == "sms_keyword")
                    )
                ).scalars()
            )
        )


def test_the_webhook_units_of_a_burst_are_recorded_together(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(container)
    calls: list[int] = []
    real = inbound_service.record_inbound_many

    def spy(conn: Connection, clock: Any, batch: list[Reply], **kw: Any) -> Any:
        calls.append(len(batch))
        return real(conn, clock, batch, **kw)

    monkeypatch.setattr(inbound_service, "record_inbound_many", spy)
    results = _burst(container, _stops(container, 6))
    assert calls == [6]
    assert [r["status"] for r in results] == ["recorded"] * 6
    assert all(r["consent_event_id"] and len(r["replies"]) == 1 for r in results)
    assert _opted_out(container, 6) == 6  # (person 5 had opted out on the web: recorded again)


def test_a_failed_batch_records_each_reply_alone(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(container)

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a deadlock loser")

    monkeypatch.setattr(inbound_service, "record_inbound_many", broken)
    results = _burst(container, _stops(container, 4))
    assert [r["status"] for r in results] == ["recorded"] * 4  # each alone, through record_inbound
    with container.db.read() as conn:
        assert conn.execute(select(inbound_messages.c.id)).all().__len__() == 4
        assert ledger.verify(conn).ok


def test_a_batch_pushes_the_event_hooks_one_reply_after_another_pushes(container: Container) -> None:
    # An endpoint subscribed to what the script's replies cause: each reply's opt-out, opt-in and review is
    # queued for it in the batch's transaction, as each is when the replies come one at a time.
    _world(container)
    box = container.secret_box()
    with container.db.transaction() as conn:
        event_hooks.create_endpoint(
            conn,
            container.clock,
            box,
            url="https://crm.example/hooks",
            events=["opt_out", "opt_in", "opt_in_confirmed", "review.needed"],
            development=False,
        )
    with container.db.transaction() as conn:
        for r in _replies(0):
            record_inbound(conn, container.clock, r.sms)
    with container.db.transaction() as conn:
        record_inbound_many(conn, container.clock, _replies(100))

    def pushed(conn: Connection, base: int) -> list[tuple[Any, ...]]:
        phones = {outbound.phone(base + p): p for p in [*range(10), 900]}
        out = []
        for event_type, body in conn.execute(
            select(webhook_deliveries.c.event_type, webhook_deliveries.c.body).order_by(
                webhook_deliveries.c.id
            )
        ):
            data = json.loads(body)["data"]
            if data["phone"] not in phones:
                continue
            out.append(
                (
                    phones[data["phone"]], event_type, data.get("brand"), data.get("program"),
                    data.get("brand_wide"), data.get("channel"), data.get("status"), data.get("body"),
                )
            )  # fmt: skip
        return out

    with container.db.read() as conn:
        alone, batched = pushed(conn, 0), pushed(conn, 100)
    assert sum(1 for p in batched if p[1] == "opt_out") >= 5  # the plain STOPs were pushed
    assert sorted(batched, key=repr) == sorted(alone, key=repr)
