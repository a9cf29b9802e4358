"""Contact use cases: create, show with consent history, change consent with evidence."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection

from optline.adapters.clock import Clock
from optline.adapters.db import contacts as repo
from optline.adapters.db import ledger
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import consent
from optline.services.programs import require_program


def create_contact(
    conn: Connection,
    clock: Clock,
    phone: str,
    region: str,
    *,
    attributes: dict[str, Any] | None = None,
    locale: str | None = None,
    time_zone: str | None = None,
) -> dict[str, Any]:
    parsed = parse_phone(phone, region)
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {time_zone!r} (use an IANA name like America/Chicago)"
            ) from None
    extra: dict[str, Any] = {"attributes": attributes or {}, "locale": locale}
    if time_zone:
        extra.update(time_zone=time_zone, time_zone_overridden=True)
    # Created here or not at all: two requests for one new number at once get one 201 and one "exists".
    contact, created = repo.get_or_create(conn, parsed, clock.now(), **extra)
    if not created:
        raise ValueError(f"a contact with phone {parsed.e164} already exists")
    return show_contact(conn, parsed.e164, region) or contact


def show_contact(conn: Connection, phone: str, region: str) -> dict[str, Any] | None:
    contact = repo.get_by_phone(conn, parse_phone(phone, region).e164)
    if contact is None:
        return None
    return {
        **contact,
        "subscriptions": consent.subscriptions_of(conn, contact["id"]),
        "history": ledger.history(conn, contact["id"]),
    }


def change_consent(
    conn: Connection,
    clock: Clock,
    phone: str,
    region: str,
    *,
    program_name: str,
    action: str,
    evidence: dict[str, Any],
    channel: Channel = Channel.API,
    occurred_at: datetime | None = None,
    brand_wide: bool | None = None,
) -> dict[str, Any]:
    """Opt a contact in or out through the API or admin tools. An opt-in needs its evidence."""
    program = require_program(conn, program_name)
    parsed = parse_phone(phone, region)
    contact, _ = repo.get_or_create(conn, parsed, clock.now())
    change = consent.record(
        conn,
        clock,
        contact_id=contact["id"],
        program=program,
        action=Action(action),
        channel=channel,
        evidence=evidence,
        occurred_at=occurred_at,
        brand_wide=brand_wide,
    )
    names = {p["id"]: p["name"] for p in [program, *_brand_programs(conn, program)]}
    return {
        "event": change.event,
        "statuses": {names.get(pid, str(pid)): after.value for pid, (_, after) in change.statuses.items()},
    }


def _brand_programs(conn: Connection, program: dict[str, Any]) -> list[dict[str, Any]]:
    from optline.adapters.db import programs

    return programs.of_brand(conn, program["brand"])
