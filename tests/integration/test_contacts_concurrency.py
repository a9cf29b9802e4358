"""Create-or-get of a contact under concurrency (issue 12, item 5), on SQLite and PostgreSQL.

Two first messages from a new number arrive at the same moment: each writer runs in its own connection and
transaction, both start together (a barrier) and each keeps its transaction open a moment after its write,
so the second writer's check runs while the first one's contact is inserted but not yet committed — the
interleaving that made one of them fail on the unique phone number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from optline.adapters.db.tables import contacts, inbound_messages
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.services import contacts as contact_service
from optline.services.contacts_import import import_file
from optline.services.inbound import record_inbound
from optline.services.programs import create_program

NEW = "+14155550177"
HOLD = 0.4  # seconds each writer keeps its transaction open after writing


def race(
    container: Container, *writers: Callable[[Connection], Any]
) -> tuple[list[Any], list[BaseException]]:
    start = threading.Barrier(len(writers))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(writer: Callable[[Connection], Any]) -> None:
        try:
            start.wait(timeout=30)
            with container.db.transaction() as conn:
                results.append(writer(conn))
                time.sleep(HOLD)
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


def count(container: Container, table: Any) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_two_first_messages_from_a_new_number_at_once(container: Container) -> None:
    with container.db.transaction() as conn:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            sender_numbers=["+14155550100"],
        )

    def first_message(sid: str) -> Callable[[Connection], Any]:
        sms = InboundSms(
            provider="twilio",
            provider_message_id=sid,
            from_phone=NEW,
            to_phone="+14155550100",
            body="hi, is the shop open today?",
        )
        return lambda conn: record_inbound(conn, container.clock, sms)

    results, errors = race(container, first_message("SMa"), first_message("SMb"))
    assert errors == []
    assert count(container, contacts) == 1
    with container.db.read() as conn:
        recorded = conn.execute(select(inbound_messages.c.provider_message_id, inbound_messages.c.contact_id))
        rows = sorted(recorded.all())
    assert [sid for sid, _ in rows] == ["SMa", "SMb"]
    assert len({cid for _, cid in rows}) == 1 and {r.contact_id for r in results} == {rows[0][1]}


def test_two_api_creates_of_one_number_give_one_contact_and_a_clear_conflict(container: Container) -> None:
    def create(conn: Connection) -> Any:
        return contact_service.create_contact(conn, container.clock, "(415) 555-0177", "US")

    results, errors = race(container, create, create)
    assert len(results) == 1 and results[0]["phone"] == NEW
    assert [str(e) for e in errors] == [f"a contact with phone {NEW} already exists"]
    assert count(container, contacts) == 1


def test_an_import_racing_a_first_message_merges_into_the_new_contact(
    container: Container, tmp_path: Path
) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            sender_numbers=["+14155550100"],
        )
    path = tmp_path / "list.csv"
    path.write_text("phone,name\n(415) 555-0177,Ann\n4155550178,Bob\n", encoding="utf-8")
    sms = InboundSms(
        provider="twilio", provider_message_id="SMc", from_phone=NEW, to_phone="+14155550100", body="hello"
    )
    inbound_started = threading.Event()
    outcome: dict[str, Any] = {}

    def inbound(conn: Connection) -> Any:
        result = record_inbound(conn, container.clock, sms)
        inbound_started.set()
        return result

    def importer() -> None:
        inbound_started.wait(timeout=30)  # the first message's contact exists, uncommitted
        try:
            outcome["summary"] = import_file(container.db, container.clock, path, program)
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=importer)
    thread.start()
    _, errors = race(container, inbound)
    thread.join(timeout=120)
    assert errors == [] and "error" not in outcome
    summary = outcome["summary"]
    assert summary.rejected == 0 and summary.created + summary.updated == 2
    with container.db.read() as conn:
        ann = conn.execute(select(contacts).where(contacts.c.phone == NEW)).one()
    assert ann.attributes == {"name": "Ann"}  # the file's data is not dropped when the contact appeared first
    assert count(container, contacts) == 2
