"""Concurrent writers never fork a chain, and writers for different contacts do not serialise globally."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from optline.adapters.db import contacts, ledger
from optline.adapters.db.tables import consent_events, ledger_digests
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import consent
from optline.services.programs import create_program

WRITERS = 8
EVENTS_EACH = 15


def test_concurrent_appends_keep_every_chain_intact(container: Container) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        ids = [
            contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), container.clock.now())[0]["id"]
            for i in range(100, 103)
        ]
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(EVENTS_EACH):
                cid = ids[(n + i) % len(ids)]  # several writers hit the same contact at the same moment
                action = Action.REVIEW_HOLD if i % 2 else Action.REVIEW_CLEARED
                with container.db.transaction() as conn:
                    consent.record(
                        conn,
                        container.clock,
                        contact_id=cid,
                        program=program,
                        action=action,
                        channel=Channel.ADMIN,
                        evidence={"writer": n, "i": i},
                    )
        except BaseException as exc:  # collected, re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    with container.db.read() as conn:
        total = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
        result = ledger.verify(conn)
    assert total == WRITERS * EVENTS_EACH
    assert result.ok, result.breaks[:3]
    assert result.chains == len(ids)


def test_a_held_contact_lock_does_not_block_other_contacts(container: Container, engine_name: str) -> None:
    if engine_name != "postgresql":
        pytest.skip("SQLite serialises all writers by design (one process, BEGIN IMMEDIATE)")
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )
        a = contacts.get_or_create(conn, parse_phone("+14155550100"), container.clock.now())[0]["id"]
        b = contacts.get_or_create(conn, parse_phone("+14155550101"), container.clock.now())[0]["id"]
    with container.db.transaction() as slow:
        ledger.lock_contact(slow, a)  # a long transaction holds contact a's chain
        done = threading.Event()

        def other() -> None:
            with container.db.transaction() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                consent.record(
                    conn,
                    container.clock,
                    contact_id=b,
                    program=program,
                    action=Action.OPT_OUT,
                    channel=Channel.WEB,
                    evidence={},
                )
            done.set()

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=30)
        assert done.is_set(), "an append for contact b waited on contact a's lock"


DIGESTERS = 6


def test_concurrent_digests_extend_one_digest_chain(container: Container) -> None:
    """Several workers recording a digest at the same moment: each one extends the previous, no fork."""
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        for i in range(3):
            cid = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), container.clock.now())[0][
                "id"
            ]
            consent.record(
                conn,
                container.clock,
                contact_id=cid,
                program=program,
                action=Action.OPT_OUT,
                channel=Channel.ADMIN,
                evidence={"operator": "ann", "note": "asked by phone"},
            )
    errors: list[BaseException] = []
    recorded: list[str | None] = []
    start = threading.Barrier(DIGESTERS)

    def digester() -> None:
        try:
            if container.db.is_sqlite:  # BEGIN IMMEDIATE already queues writers: meet before it
                start.wait(timeout=30)
            with container.db.transaction() as conn:
                if not container.db.is_sqlite:
                    conn.execute(select(func.count()).select_from(ledger_digests))  # the snapshot is taken
                    start.wait(timeout=30)  # every transaction is open before any of them records
                recorded.append(ledger.record_digest(conn, container.clock.now()))
        except BaseException as exc:  # collected, re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=digester) for _ in range(DIGESTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    with container.db.read() as conn:
        result = ledger.verify(conn)
        prevs = conn.execute(select(ledger_digests.c.prev_digest)).scalars().all()
    assert result.ok, result.breaks[:3]
    assert result.digests == DIGESTERS and len(set(prevs)) == DIGESTERS


def test_a_forking_digest_is_refused_by_the_database(container: Container) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )
        cid = contacts.get_or_create(conn, parse_phone("+14155550100"), container.clock.now())[0]["id"]
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.ADMIN,
            evidence={"operator": "ann", "note": "asked by phone"},
        )
        first = ledger.record_digest(conn, container.clock.now())
        ledger.record_digest(conn, container.clock.now())
    # A second digest claiming the same predecessor as an existing one would fork the digest chain.
    with pytest.raises(IntegrityError), container.db.transaction() as conn:
        conn.execute(
            insert(ledger_digests).values(
                created_at=container.clock.now(), chains=1, prev_digest=first, digest="f" * 64
            )
        )
