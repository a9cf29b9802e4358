"""The ledger's digest and a checkpoint's figures read what moved and a few kept counts, not every event
ever recorded (both engines). What they prove is unchanged: test_ledger_tamper.py and
test_ledger_checkpoints.py still catch every tampered case."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from optline.adapters.db import contacts, ledger
from optline.adapters.db.tables import consent_events
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services.programs import create_program
from tests.integration.test_dashboard_plans import assert_no_history_scan, captured_in
from tests.integration.test_ledger_tamper import _opted_out, _verify
from tests.support import outbound
from tests.support import outbox_rows as rows


def direct_totals(container: Container) -> tuple[int, int]:
    with container.db.read() as conn:
        row = conn.execute(select(func.count(func.distinct(consent_events.c.contact_id)), func.count())).one()
    return int(row[0]), int(row[1])


def test_totals_equal_a_direct_count(container: Container) -> None:
    with container.db.read() as conn:
        assert ledger.totals(conn) == (0, 0)
    program, ids = outbound.seed(container, 40)  # an import: many first events in one statement
    with container.db.transaction() as conn:  # one append at a time, on chains that exist
        for cid in ids[:5]:
            outbound.opt_out(conn, container.clock, program, cid)
        # A second program: the same people's chains go on (seq 2), five new people start theirs.
        other = outbound.make_program(conn, container.clock, name="news")
        outbound.subscribe(conn, container.clock, other, ids[30:])
        outbound.subscribe(
            conn, container.clock, other, outbound.insert_contacts(conn, container.clock.now(), 100, 5)
        )
    with container.db.read() as conn:
        assert ledger.totals(conn) == direct_totals(container) == (45, 40 + 5 + 10 + 5)


def test_the_next_digest_reads_only_what_moved(container: Container) -> None:
    """Months of events, a digest, then a few new events: the next digest's queries read a range of
    ``ix_consent_events_recorded`` and the chains' unique index, no scan of the ledger."""
    now = container.clock.now()
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        for i in range(10):
            person = contacts.get_or_create(conn, parse_phone(f"+1415556{i:04d}"), now)[0]
            rows.bulk_history(
                conn,
                program_id=program["id"],
                contact_id=person["id"],
                at=now - timedelta(days=30 + 20 * i),
                messages_=0,
                events=2000,
                inbound_=0,
                digests=0,
                tag=f"d{i}",
            )
        ledger.record_digest(conn, now)  # the first digest reads every chain: there is no earlier one
    container.clock.advance(minutes=10)
    _opted_out(container, 2)
    with container.db.transaction() as conn:
        conn.exec_driver_sql("ANALYZE")

    def digest(conn: object) -> None:
        assert ledger.record_digest(conn, container.clock.now()) is not None  # type: ignore[arg-type]

    statements = captured_in(container, digest, write=True)
    used = assert_no_history_scan(container, statements)
    assert "ix_consent_events_recorded" in used, used
    with container.db.read() as conn:
        newest = ledger.newest_digest(conn)
    assert newest.chains == 2  # the two contacts that moved, nothing else


def test_verification_still_reads_every_event(container: Container) -> None:
    """The proof cannot be incremental: an event edited in place keeps its stored hash and links, and only
    rehashing it from its content shows the edit. So ``verify`` still checks every event."""
    _opted_out(container, 3)
    with container.db.transaction() as conn:
        ledger.record_digest(conn, container.clock.now())
    result = _verify(container)
    assert result.ok and result.events == direct_totals(container)[1] == 6
