"""The one-tap opt-out link: what the page shows for a token, and the unsubscribe its POST records.

A GET only reads (``find``); only ``unsubscribe`` (the page's POST) changes consent (invariant 5). The
sentence the person saw is built here, once, so the page renders it and the ledger keeps it as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import Connection, select

from optline.adapters.clock import Clock
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import contacts, messages, programs
from optline.domain.consent import Action, Channel, OptOutScope, Status
from optline.domain.optout_links import is_well_formed
from optline.services import consent


@dataclass(frozen=True)
class OptoutPage:
    token: str
    message_id: int
    contact_id: int
    program: dict[str, Any]
    masked_phone: str
    # The program's policy already stops every program of the brand: no choice to offer.
    brand_wide_by_policy: bool
    # Already unsubscribed from this program (True) and from every program of the brand (all_out).
    already_out: bool
    all_out: bool

    @property
    def brand(self) -> str:
        return str(self.program["brand"])

    @property
    def program_label(self) -> str:
        return str(self.program["name"])

    def stop_text(self) -> str:
        if self.brand_wide_by_policy:
            return f"Stop all text messages from {self.brand}."
        return f"Stop {self.program_label} text messages from {self.brand}."

    def only_text(self) -> str:
        return f"Only {self.program_label} messages"

    def all_text(self) -> str:
        return f"All messages from {self.brand}"

    def shown_text(self, all_brand: bool) -> str:
        """What the page said, as the person answered it (kept as evidence)."""
        if self.brand_wide_by_policy:
            return self.stop_text()
        chosen = self.all_text() if all_brand else self.only_text()
        return f"{self.stop_text()} Options: {self.only_text()} / {self.all_text()}. Chosen: {chosen}."

    def rejoin_text(self) -> str:
        senders = list(self.program.get("sender_numbers") or [])
        where = self.program.get("short_code") or (_display(senders[0]) if senders else None)
        return f"Text START to {where} to rejoin." if where else f"Contact {self.brand} to rejoin."


@dataclass(frozen=True)
class OptoutResult:
    page: OptoutPage
    brand_wide: bool
    recorded: bool  # False when the person was already unsubscribed from everything asked
    event_id: int | None


def _display(e164: str) -> str:
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
    except phonenumbers.NumberParseException:
        return e164


def mask_phone(e164: str) -> str:
    """Enough of the number to recognise it, not enough to learn it from a forwarded link."""
    return f"•••• {e164[-4:]}" if len(e164) >= 4 else "••••"


def find(conn: Connection, token: str) -> OptoutPage | None:
    """The page for a token, or None for a malformed or unknown one. Reads only."""
    if not is_well_formed(token):
        return None
    row = conn.execute(
        select(messages.c.id.label("message_id"), messages.c.contact_id, contacts.c.phone, programs)
        .join(contacts, contacts.c.id == messages.c.contact_id)
        .join(programs, programs.c.id == messages.c.program_id)
        .where(messages.c.optout_token == token)
    ).first()
    if row is None:
        return None
    data = dict(row._mapping)
    program = {c.name: data[c.name] for c in programs.c}
    brand_programs = program_repo.of_brand(conn, program["brand"])
    statuses = {p["id"]: consent.current(conn, data["contact_id"], p)[0] for p in brand_programs}
    return OptoutPage(
        token=token,
        message_id=data["message_id"],
        contact_id=data["contact_id"],
        program=program,
        masked_phone=mask_phone(data["phone"]),
        brand_wide_by_policy=program["optout_scope"] == OptOutScope.BRAND.value,
        already_out=statuses.get(program["id"]) is Status.UNSUBSCRIBED,
        all_out=all(s is Status.UNSUBSCRIBED for s in statuses.values()),
    )


def unsubscribe(
    conn: Connection,
    clock: Clock,
    token: str,
    *,
    all_brand: bool,
    ip: str | None,
    user_agent: str | None,
    url: str,
) -> OptoutResult | None:
    """Record the opt-out the page's POST asked for (channel ``web``); None for an unknown token."""
    page = find(conn, token)
    if page is None:
        return None
    brand_wide = page.brand_wide_by_policy or all_brand
    if page.all_out if brand_wide else page.already_out:
        return OptoutResult(page=page, brand_wide=brand_wide, recorded=False, event_id=None)
    evidence = {
        "ip": ip, "user_agent": user_agent, "page_text": page.shown_text(all_brand), "message_id": page.message_id,
        "url": url, "scope": "brand" if brand_wide else "program",
    }  # fmt: skip
    change = consent.record(
        conn,
        clock,
        contact_id=page.contact_id,
        program=page.program,
        action=Action.OPT_OUT,
        channel=Channel.WEB,
        evidence=evidence,
        brand_wide=True if brand_wide else None,
    )
    return OptoutResult(page=page, brand_wide=brand_wide, recorded=True, event_id=int(change.event["id"]))
