"""Replies from numbers of no contact yet, recorded in a batch (services/inbound.py ``record_inbound_many``,
issue 17): the batch creates their contacts in one statement (adapters/db/contacts.py ``create_many``) and
records their plain STOPs with the known people's, and what it writes is what ``record_inbound`` writes for
the same replies one after another — contacts, ledger (hash chain included), projection, replies queued,
review pushes — on both engines, also when another connection creates one of the numbers meanwhile.

Each comparison runs the same replies twice on the same world: one by one in a transaction that is read and
then rolled back, then as one batch. Ids are replaced by what names the row (a contact's phone, an event's
person and position in their chain, a message's recipient, kind and text): PostgreSQL's sequences do not roll back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text

from optline.adapters.clock import as_utc
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import ledger
from optline.adapters.db.tables import (
    consent_events,
    contacts,
    inbound_messages,
    messages,
    subscriptions,
    webhook_deliveries,
)
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services import event_hooks
from optline.services import inbound as inbound_service
from optline.services.inbound import InboundResult, Reply, record_inbound, record_inbound_many
from tests.support import outbound

S1, S2, S3, NOBODY = "+14155550100", "+14155550109", "+14155550111", "+14155550177"
KNOWN = [outbound.phone(i) for i in range(3)]
# New numbers, 13 of them.
NEW = sorted(outbound.phone(500 + n) for n in range(13))

# (sender, body, number texted, provider message id, provider's own opt-out)
SCRIPT: list[tuple[str, str, str, str, str | None]] = [
    (KNOWN[0], "STOP", S1, "a", None),
    (NEW[0], "STOP", S1, "b", None),  # a new number's plain STOP: joins the set-based path
    (NEW[1], "hello there", S1, "c", None),  # other text: one by one, on the contact the batch created
    (NEW[0], "stop", S1, "d", None),  # the same new number again: after its first
    ("ACME", "STOP", S1, "e", None),  # not a phone number: stored, nobody to stop
    (NEW[2], "STOP", S1, "f", None),
    (NEW[2], "STOP", S1, "f", None),  # the provider delivered it twice
    (NEW[3], "STOP", NOBODY, "g", None),  # to no program's number: held for review, nothing to stop
    (NEW[4], "HELP", S1, "h", None),
    (NEW[5], "can you cancel it?", S1, "i", None),  # a review cue, nothing sent to them: not held
    (NEW[6], "START", S1, "j", None),  # an opt-in keyword from a new person
    (NEW[7], "STOP", S2, "k", None),  # a program whose opt-outs are brand-wide
    (NEW[8], "STOPALL", S1, "l", None),  # brand-wide by its words
    (NEW[9], "STOP", S1, "m", "STOP"),  # the provider stopped the number itself: no confirmation
    (NEW[10], "no quiero mas mensajes", S1, "n", None),  # Spanish: the confirmation in Spanish
    (KNOWN[1], "STOP", S2, "o", None),
    (NEW[11], "JOIN", S3, "p", None),  # a double opt-in program's join keyword: the sign-up flow
    (NEW[12], "STOP", S3, "q", None),
    (KNOWN[2], "hello", S1, "r", None),
]


def _world(container: Container) -> None:
    box = container.secret_box()  # (its key is created in a transaction of its own)
    with container.db.transaction() as conn:
        clock = container.clock
        p1 = outbound.make_program(conn, clock, "deals", sender_numbers=[S1])
        p2 = outbound.make_program(conn, clock, "news", sender_numbers=[S2], optout_scope="brand")
        outbound.make_program(
            conn, clock, "club", sender_numbers=[S3], double_opt_in=True, join_keywords=["JOIN"]
        )
        ids = outbound.insert_contacts(conn, clock.now(), 0, len(KNOWN))
        outbound.subscribe(conn, clock, p1, ids)
        outbound.subscribe(conn, clock, p2, ids)
        # An endpoint for every push a reply can cause: the batch must queue the same ones.
        event_hooks.create_endpoint(
            conn,
            clock,
            box,
            url="https://crm.example/hooks",
            events=["opt_out", "opt_in", "opt_in_confirmed", "review.needed"],
            development=False,
        )


def _replies(script: list[tuple[str, str, str, str, str | None]]) -> list[Reply]:
    return [
        Reply(InboundSms("twilio", f"SM{mid}", sender, to, body), provider_opt_out=opt_out)
        for sender, body, to, mid, opt_out in script
    ]


class _RolledBack(Exception):
    pass


def _named_evidence(evidence: dict[str, Any], inbound: dict[Any, str]) -> dict[str, Any]:
    """The reply's inbound id by its provider message id; other ids (a sign-up's, its disclosure's) only
    present: they come from sequences that a rollback does not rewind on PostgreSQL."""
    named = dict(evidence)
    for key, value in evidence.items():
        if key == "inbound_id":
            named[key] = inbound[value]
        elif key.endswith("_id") and key != "provider_message_id" and value is not None:
            named[key] = "<id>"
    return named


def _snapshot(conn: Connection, results: list[InboundResult]) -> dict[str, Any]:
    """Every row the replies can write, and the results, with ids replaced by what names each row."""
    people = {r.id: r.phone for r in conn.execute(select(contacts.c.id, contacts.c.phone))}
    events = {r.id: (people[r.contact_id], r.seq) for r in conn.execute(select(consent_events))}
    inbound = {r.id: r.provider_message_id for r in conn.execute(select(inbound_messages))}
    sent = {r.id: (r.to_phone, r.kind, r.body) for r in conn.execute(select(messages))}

    def named(table: Any, order: Any, refs: dict[str, dict[Any, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in conn.execute(select(table).order_by(*order)).mappings():
            values = {k: v for k, v in row.items() if k != "id"}
            for column, names in refs.items():
                if values.get(column) is not None:
                    values[column] = names[values[column]]
            if isinstance(values.get("evidence"), dict):
                values["evidence"] = _named_evidence(values["evidence"], inbound)
            for chained in ("prev_hash", "hash"):  # over ids: checked by ledger.verify (_compare)
                values.pop(chained, None)
            out.append(values)
        return out

    pushed = []
    for row in conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).mappings():
        data = json.loads(row["body"])["data"]
        pushed.append((row["event_type"], {k: v for k, v in data.items() if not k.endswith("id")}))
    return {
        "contacts": named(contacts, [contacts.c.phone], {}),
        "events": named(
            consent_events,
            [consent_events.c.contact_id, consent_events.c.seq],
            {"contact_id": people},
        ),
        "subscriptions": named(
            subscriptions,
            [subscriptions.c.contact_id, subscriptions.c.program_id],
            {"contact_id": people, "last_event_id": events, "consent_event_id": events},
        ),
        "messages": [
            # A sign-up prompt's key is made of the program and contact ids; a reply's of the message answered.
            {**m, "idempotency_key": "<ids>" if m["kind"] == "signup" else m["idempotency_key"]}
            for m in named(
                messages,
                [messages.c.to_phone, messages.c.kind, messages.c.body],
                {"contact_id": people, "consent_event_id": events},
            )
        ],
        "inbound": named(
            inbound_messages,
            [inbound_messages.c.provider_message_id],
            {"contact_id": people, "consent_event_id": events},
        ),
        "pushed": sorted(pushed, key=repr),
        "results": [
            (
                r.duplicate,
                r.classification,
                r.note,
                r.program_id,
                r.contact_id and people[r.contact_id],
                r.inbound_id and inbound[r.inbound_id],
                r.consent_event_id and events[r.consent_event_id],
                [sent[m] for m in r.replies],
            )
            for r in results
        ],
        "verified": ledger.verify(conn).ok,
    }


def _one_by_one(container: Container, replies: list[Reply], before: Callable[[Connection], None]) -> Any:
    """What ``record_inbound`` gives the replies one after another (rolled back after it is read)."""
    got: dict[str, Any] = {}
    with pytest.raises(_RolledBack), container.db.transaction() as conn:
        before(conn)
        results = [
            record_inbound(conn, container.clock, r.sms, provider_opt_out=r.provider_opt_out) for r in replies
        ]
        got.update(_snapshot(conn, results))
        raise _RolledBack
    return got


def _nothing(conn: Connection) -> None:
    pass


def _compare(alone: dict[str, Any], batched: dict[str, Any]) -> None:
    """Equal but for ids; the hashes cover ids (an event's contact, its evidence's inbound id, which the batch
    gives its plain STOPs first), so each chain is checked whole by ledger.verify instead."""
    assert batched["verified"] and alone["verified"]
    for part in ("contacts", "events", "subscriptions", "messages", "inbound", "pushed", "results"):
        assert batched[part] == alone[part], part


def test_new_numbers_in_a_batch_give_what_one_reply_after_another_gives(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(container)
    replies = _replies(SCRIPT)
    alone = _one_by_one(container, replies, _nothing)
    plain: list[list[str]] = []
    real = inbound_service._opt_outs

    def spy(conn: Connection, clock: Any, batch: list[Any], fresh: set[int]) -> Any:
        plain.append([reply.sms.provider_message_id for _, reply, _, _, _ in batch])
        return real(conn, clock, batch, fresh)

    monkeypatch.setattr(inbound_service, "_opt_outs", spy)
    with container.db.transaction() as conn:
        results = record_inbound_many(conn, container.clock, replies)
        batched = _snapshot(conn, results)
    # The known people's two STOPs and the new numbers' seven plain first ones, together.
    assert plain == [[f"SM{m}" for m in "abfklmnoq"]], plain
    _compare(alone, batched)
    new_contacts = [c for c in batched["contacts"] if c["phone"] in NEW]
    assert len(new_contacts) == len(NEW)
    # As get_or_create makes it: region, number type, time zone and state from the number; no locale.
    expected = contact_repo.values_for(parse_phone(NEW[0], "US"), container.clock.now())
    for times in ("created_at", "updated_at"):  # (SQLite reads them back without their zone)
        assert as_utc(new_contacts[0].pop(times)) == expected.pop(times)
    assert {k: v for k, v in new_contacts[0].items() if k in expected} == expected


def test_the_new_contacts_are_created_in_one_statement(container: Container) -> None:
    _world(container)
    statements: list[str] = []
    from sqlalchemy import event

    def capture(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    replies = [Reply(InboundSms("twilio", f"SMs{i}", NEW[i], S1, "STOP")) for i in range(8)]
    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        with container.db.transaction() as conn:
            results = record_inbound_many(conn, container.clock, replies)
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    assert all(r.consent_event_id and len(r.replies) == 1 for r in results)
    assert sum(s.startswith("INSERT INTO contacts") for s in statements) == 1, statements
    # Sent nothing before: their confirmations are due without asking when the last one went.
    assert not any("messages.kind" in s and "ORDER BY messages.created_at DESC" in s for s in statements)


CONCURRENT = [
    (KNOWN[0], "STOP", S1, "a", None),
    (NEW[0], "STOP", S1, "b", None),
    (NEW[1], "BAJA", S1, "c", None),  # created elsewhere with locale "es" before the batch's insert
    (NEW[2], "STOP", S1, "d", None),
]


def _created_by_another(container: Container, phone: str) -> None:
    with container.db.transaction() as other:
        values = contact_repo.values_for(parse_phone(phone, "US"), container.clock.now(), locale="es")
        other.execute(insert(contacts).values(**values))


def test_a_number_another_connection_creates_first_is_used_not_duplicated(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: another connection commits the contact after the batch looked its senders up and before
    its insert (the insert then conflicts). SQLite has one writer at a time: the other one commits before
    the batch begins, and the batch finds the contact."""
    _world(container)
    replies = _replies(CONCURRENT)

    def existing(conn: Connection) -> None:
        values = contact_repo.values_for(parse_phone(NEW[1], "US"), container.clock.now(), locale="es")
        conn.execute(insert(contacts).values(**values))

    alone = _one_by_one(container, replies, existing)
    if container.db.is_sqlite:
        _created_by_another(container, NEW[1])
    else:
        real = contact_repo.get_by_phones

        def then_another_writer(conn: Connection, e164s: list[str]) -> Any:
            found = real(conn, e164s)
            if NEW[1] in e164s and NEW[1] not in found:  # the batch's look-up, before its insert
                _created_by_another(container, NEW[1])
            return found

        monkeypatch.setattr(contact_repo, "get_by_phones", then_another_writer)
    with container.db.transaction() as conn:
        results = record_inbound_many(conn, container.clock, replies)
        batched = _snapshot(conn, results)
    _compare(alone, batched)
    assert [c["locale"] for c in batched["contacts"] if c["phone"] == NEW[1]] == ["es"]
    assert len([m for m in batched["messages"] if m["contact_id"] == NEW[1]]) == 1  # its confirmation


def test_a_batch_waits_for_a_writer_that_has_not_committed_the_number_yet(container: Container) -> None:
    """PostgreSQL: the other writer inserted the number and has not committed: the batch's insert waits for
    it (as get_or_create's does), then reads its row back; no duplicate, no failed batch."""
    if container.db.is_sqlite:
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE)")
    _world(container)
    replies = _replies(CONCURRENT)
    other = container.db.engine.connect()
    other.begin()
    values = contact_repo.values_for(parse_phone(NEW[1], "US"), container.clock.now(), locale="es")
    other.execute(insert(contacts).values(**values))
    got: dict[str, Any] = {}

    def batch() -> None:
        with container.db.transaction() as conn:
            got["pid"] = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            got["results"] = record_inbound_many(conn, container.clock, replies)

    thread = threading.Thread(target=batch)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        waiting = False
        while time.monotonic() < deadline and not waiting:
            time.sleep(0.05)
            if "pid" in got:
                waiting = bool(
                    other.execute(
                        text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": got["pid"]},
                    ).scalar()
                )
        assert waiting, "the batch's insert did not wait for the other writer"
    finally:
        other.commit()
        other.close()
        thread.join(30)
    results = got["results"]
    assert all(r.consent_event_id is not None for r in results)
    with container.db.read() as conn:
        rows = conn.execute(select(contacts.c.locale).where(contacts.c.phone == NEW[1])).all()
        assert [r.locale for r in rows] == ["es"]
        assert ledger.verify(conn).ok
    assert results[2].classification is not None and results[2].classification.language == "es"


def test_a_new_numbers_stop_reads_its_own_events_not_every_opt_out(container: Container) -> None:
    """A person with no projection row yet (every new number) is asked whether they opted out of the whole
    brand before (services/consent.py ``_BRAND_OPT_OUT``, once per person). On SQLite, whose planner has no
    statistics, that question takes ix_consent_events_action_time (action = 'opt_out') and reads every
    opt-out in the ledger, for each new number: over HTTP a burst of new numbers' STOPs cost more CPU with
    every round (1.5 then 2.4 ms a STOP in the writer thread). Fails on SQLite without ``unindexed`` there."""
    from tests.integration.test_inbound_plans import HISTORY, seed_history
    from tests.support import plans

    program = seed_history(container)
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters[0] if many else parameters))

    replies = [
        Reply(InboundSms("twilio", f"SMn{i}", NEW[i], program["sender_numbers"][0], "STOP")) for i in range(4)
    ]
    from sqlalchemy import event

    event.listen(container.db.engine, "before_cursor_execute", capture)
    try:
        with container.db.transaction() as conn:
            assert all(r.consent_event_id for r in record_inbound_many(conn, container.clock, replies))
    finally:
        event.remove(container.db.engine, "before_cursor_execute", capture)
    used = plans.assert_no_scan(container, seen, HISTORY)
    assert "ix_consent_events_action_time" not in used, used
