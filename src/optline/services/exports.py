"""The dashboard's CSV exports as rows: contacts with their status, opt-outs with channel and evidence, the
opt-out report, the list review's findings.

Each export is a generator that reads in keyset batches, each batch in a read of its own, so a million rows
are streamed in constant memory and no transaction stays open while the browser downloads. Cells are plain
strings; the writer (entrypoints) escapes formulas (domain/csv_safety.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.database import Database
from optline.adapters.db.tables import audit_findings, audit_runs, consent_events, contacts, programs
from optline.domain.consent import Action
from optline.services import analytics, contact_search

BATCH = 2000
Row = list[str]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return str(value)


def contacts_rows(db: Database, query: contact_search.Query, region: str) -> Iterator[Row]:
    """One row per contact and program (a contact with no subscription: one row, program empty)."""
    yield ["phone", "name", "program", "status", "held_for_review", "since", "attributes"]
    after = 0
    while True:
        with db.read() as conn:
            rows, nxt = contact_search.search(conn, query, region, after=after, limit=BATCH)
        for c in rows:
            attrs = _text(c.get("attributes") or {})
            for s in c["subscriptions"] or [None]:
                if s is None:
                    yield [c["phone"], c["name"], "", "", "", "", attrs]
                else:
                    yield [
                        c["phone"],
                        c["name"],
                        s["program"],
                        s["status"],
                        "yes" if s["held"] else "no",
                        _text(s["since"]),
                        attrs,
                    ]
        if nxt is None:
            return
        after = nxt


def optouts_rows(db: Database) -> Iterator[Row]:
    """Every opt-out in the ledger, oldest first: when, who, what it stopped, how (channel), the evidence."""
    yield ["event_id", "occurred_at", "phone", "program", "brand", "channel", "evidence"]
    after = 0
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(
                    consent_events.c.id,
                    consent_events.c.occurred_at,
                    contacts.c.phone,
                    programs.c.name,
                    consent_events.c.brand,
                    consent_events.c.channel,
                    consent_events.c.evidence,
                )
                .join(contacts, contacts.c.id == consent_events.c.contact_id)
                .outerjoin(programs, programs.c.id == consent_events.c.program_id)
                .where(consent_events.c.action == Action.OPT_OUT.value, consent_events.c.id > after)
                .order_by(consent_events.c.id)
                .limit(BATCH)
            ).all()
        for r in rows:
            yield [
                str(r.id),
                _text(r.occurred_at),
                r.phone,
                r.name or f"all of {r.brand}",
                r.brand,
                r.channel,
                _text(r.evidence),
            ]
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def report_rows(db: Database, clock: Clock, window_days: int) -> Iterator[Row]:
    """The opt-out report per campaign (analytics.report: the one attribution rule), as of now."""
    yield [
        "campaign",
        "program",
        "type",
        "tag",
        "sent",
        "delivered",
        "optouts",
        "rate",
        "rate_basis",
        "ci_low",
        "ci_high",
        "program_baseline",
        "flagged",
        "why",
    ]
    with db.transaction() as conn:
        analytics.refresh(conn, clock, window_days=window_days)
    with db.read() as conn:
        rep = analytics.report(conn, clock, window_days=window_days)

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    for r in rep.campaigns:
        yield [
            r.key,
            r.program,
            r.message_type,
            r.tag or "",
            str(r.sent),
            str(r.delivered),
            str(r.optouts),
            pct(r.rate),
            r.basis,
            pct(r.ci_low),
            pct(r.ci_high),
            pct(r.baseline),
            "yes" if r.flagged else "no",
            "; ".join(r.why),
        ]


def findings_rows(db: Database) -> Iterator[Row]:
    """The latest list review's findings (what the list review page shows), with what a fix would do."""
    yield ["run_id", "reason", "phone", "program", "detail", "action", "fixed"]
    with db.read() as conn:  # the run only: its findings are read in batches below
        run_id = conn.execute(
            select(audit_runs.c.id).order_by(audit_runs.c.started_at.desc(), audit_runs.c.id.desc()).limit(1)
        ).scalar()
    if run_id is None:
        return
    after = 0
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(audit_findings, programs.c.name.label("program"))
                .outerjoin(programs, programs.c.id == audit_findings.c.program_id)
                .where(audit_findings.c.run_id == run_id, audit_findings.c.id > after)
                .order_by(audit_findings.c.id)
                .limit(BATCH)
            ).all()
        for r in rows:
            yield [str(r.run_id), r.reason, r.phone or "", r.program or "", r.detail, r.action, r.fixed or ""]
        if len(rows) < BATCH:
            return
        after = rows[-1].id
