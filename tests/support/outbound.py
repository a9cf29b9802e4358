"""Seeding programs and subscribed contacts in bulk for outbound tests and benchmarks.

Contacts are inserted directly (they are not consent); opt-ins go through ``consent.record_opt_ins`` and
opt-outs through ``consent.record`` — the only code paths allowed to change consent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from optline.adapters.clock import Clock
from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.services import consent
from optline.services.programs import create_program

AREA_CODES = ("212", "415", "312", "617", "206", "303", "512", "404", "213", "646")
IMPORT_EVIDENCE = {"source": "test fixture"}


def phone(i: int) -> str:
    """A distinct, valid-looking US mobile number for index ``i`` (up to 80 million)."""
    area = AREA_CODES[i % len(AREA_CODES)]
    rest = i // len(AREA_CODES)
    exchange = 200 + rest // 10000
    return f"+1{area}{exchange:03d}{rest % 10000:04d}"


def zone_where(allowed: bool) -> str:
    """A fixed-offset zone where it is now (and for the next hours) inside / outside the sending window:
    tests on the real clock must not depend on the time of day they run."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC)
    for offset in range(-12, 15):
        zone = f"Etc/GMT{'+' if offset <= 0 else '-'}{abs(offset)}"  # Etc/ signs are inverted
        local = now.astimezone(ZoneInfo(zone)).hour
        if (allowed and 9 <= local <= 17) or (not allowed and (local >= 22 or local < 6)):
            return zone
    raise AssertionError("no zone found")  # pragma: no cover


def make_program(conn: Connection, clock: Clock, name: str = "deals", **values: Any) -> dict[str, Any]:
    values.setdefault("brand", "Acme")
    values.setdefault("sender_numbers", ["+14155550100"])
    values.setdefault("optout_scope", "program")
    return create_program(conn, clock, help_contact="https://acme.example/help", name=name, **values)


def insert_contacts(conn: Connection, now: datetime, start: int, count: int, **columns: Any) -> list[int]:
    rows = []
    for i in range(start, start + count):
        row = {"phone": phone(i), "region": "US", "number_type": "fixed_line_or_mobile",
               "time_zone": "America/New_York", "time_zone_overridden": False, "us_state": "NY",
               "locale": None, "attributes": {"first_name": f"P{i}"}, "created_at": now, "updated_at": now}  # fmt: skip
        row.update({k: (v(i) if callable(v) else v) for k, v in columns.items()})
        rows.append(row)
    conn.execute(insert(contacts), rows)
    phones = [r["phone"] for r in rows]
    found = {
        p: cid
        for cid, p in conn.execute(
            select(contacts.c.id, contacts.c.phone).where(contacts.c.phone.in_(phones))
        )
    }
    return [found[p] for p in phones]


def subscribe(
    conn: Connection,
    clock: Clock,
    program: Mapping[str, Any],
    contact_ids: Iterable[int],
    channel: Channel = Channel.IMPORT,
    evidence: Mapping[str, Any] | None = None,
) -> None:
    items = [consent.BatchOptIn(cid, dict(evidence or IMPORT_EVIDENCE), clock.now()) for cid in contact_ids]
    for i in range(0, len(items), 5000):
        consent.record_opt_ins(conn, clock, program, channel, items[i : i + 5000])


def opt_out(
    conn: Connection,
    clock: Clock,
    program: Mapping[str, Any],
    contact_id: int,
    channel: Channel = Channel.SMS_KEYWORD,
) -> None:
    consent.record(
        conn,
        clock,
        contact_id=contact_id,
        program=program,
        action=Action.OPT_OUT,
        channel=channel,
        evidence={"message_text": "STOP"},
    )


def seed(
    container: Container, count: int, *, batch: int = 20000, **columns: Any
) -> tuple[dict[str, Any], list[int]]:
    """A program ``deals`` with ``count`` subscribed contacts (import consent)."""
    with container.db.transaction() as conn:
        program = make_program(conn, container.clock)
    ids: list[int] = []
    for start in range(0, count, batch):
        with container.db.transaction() as conn:
            chunk = insert_contacts(conn, container.clock.now(), start, min(batch, count - start), **columns)
            subscribe(conn, container.clock, program, chunk)
        ids.extend(chunk)
    return program, ids
