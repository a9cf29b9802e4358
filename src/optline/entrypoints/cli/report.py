"""``optline report``: opt-out rates per campaign, type, tag, program, day, week, channel and frequency."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any

import typer
from rich.table import Table

from optline.domain.csv_safety import SafeDictWriter
from optline.domain.dates import parse_datetime
from optline.entrypoints.cli.common import console, container, fail
from optline.services import analytics
from optline.services.programs import require_program

app = typer.Typer()


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _section_table(title: str, rows: list[analytics.RateRow]) -> Table:
    table = Table(
        "", "sent", "delivered", "opt-outs", "/ delivered", "/ sent", title=title, title_justify="left"
    )
    for r in rows:
        table.add_row(
            r.key,
            f"{r.sent:,}",
            f"{r.delivered:,}",
            f"{r.optouts:,}",
            _pct(r.rate_delivered),
            _pct(r.rate_sent),
        )
    return table


def print_table(rep: analytics.Report) -> None:
    scope = f"program {rep.program}" if rep.program else "all programs"
    since = f" since {rep.since}" if rep.since else ""
    t = rep.totals
    console.print(
        f"[bold]Opt-outs, {scope}{since}[/bold]: {t.optouts:,} opt-outs, {t.sent:,} sent, {t.delivered:,} "
        f"delivered ({_pct(t.rate_sent)} per sent); {rep.attributed:,} attributed to a campaign within "
        f"{rep.window_days} days, {rep.unattributed:,} unattributed"
    )
    camp = Table(
        "campaign",
        "program",
        "type",
        "tag",
        "sent",
        "delivered",
        "opt-outs",
        "rate",
        "95% CI",
        "baseline",
        "flag",
        title="Campaigns (rate per delivered message; per sent when no receipts)",
        title_justify="left",
    )
    for c in rep.campaigns:
        ci = "-" if c.ci_low is None else f"{_pct(c.ci_low)}–{_pct(c.ci_high)}"
        camp.add_row(
            c.key,
            c.program,
            c.message_type,
            c.tag or "",
            f"{c.sent:,}",
            f"{c.delivered:,}",
            f"{c.optouts:,}",
            _pct(c.rate),
            ci,
            _pct(c.baseline),
            "[red]FLAG[/red]" if c.flagged else "",
        )
    console.print(camp)
    for c in rep.campaigns:
        for why in c.why:
            console.print(f"  [red]{c.key}[/red]: {why}")
    titles = {
        "by_type": "By message type", "by_tag": "By tag", "by_program": "By program", "by_day": "By day",
        "by_week": "By week (starting Monday)",
        "by_channel": "By opt-out channel (rates over all messages sent)",
        "by_frequency": "Fatigue curve: by messages received in the 30 days before (rate per message sent "
                        "at that frequency)",
    }  # fmt: skip
    for name, title in titles.items():
        if getattr(rep, name):
            console.print(_section_table(title, getattr(rep, name)))


CSV_COLUMNS = ["section", "key", "sent", "delivered", "optouts", "rate_sent", "rate_delivered", "campaign_id",
               "program", "message_type", "tag", "basis", "rate", "ci_low", "ci_high", "baseline", "flagged",
               "why"]  # fmt: skip


def write_csv(rep: analytics.Report, out: Any) -> None:
    writer = SafeDictWriter(out, CSV_COLUMNS, extrasaction="ignore")  # tags and names come from users
    writer.writeheader()
    writer.writerow({"section": "totals", **rep.totals.as_dict()})
    for c in rep.campaigns:
        writer.writerow({"section": "campaign", **c.as_dict(), "why": " | ".join(c.why)})
    for name in analytics.Report.SECTIONS:
        for r in getattr(rep, name):
            writer.writerow({"section": name.removeprefix("by_"), **r.as_dict()})


@app.command("report")
def report(
    program: str = typer.Option(None, help="only this program"),
    since: str = typer.Option(None, help="from this date (YYYY-MM-DD), UTC"),
    fmt: Format = typer.Option(Format.TABLE, "--format", help="table, csv or json"),
    window: int = typer.Option(
        None, help="attribution window in days (default OPTLINE_OPTOUT_ATTRIBUTION_DAYS)"
    ),
    rebuild: bool = typer.Option(
        False, help="recompute every analytics table from the ledger and the outbox"
    ),
) -> None:
    """Opt-out rates, the fatigue curve, and campaigns flagged against their program's baseline."""
    c = container()
    window_days = window or c.settings.optout_attribution_days
    try:
        since_date = parse_datetime(since).date() if since else None
    except ValueError as exc:
        fail(f"--since: {exc}")
    with c.db.transaction() as conn:
        try:
            prog = require_program(conn, program) if program else None
        except LookupError as exc:
            fail(str(exc))
        if rebuild:
            analytics.rebuild(conn, c.clock, window_days=window_days)
        else:
            analytics.refresh(conn, c.clock, window_days=window_days)
        rep = analytics.report(conn, c.clock, program=prog, since=since_date, window_days=window_days)
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(rep.as_dict(), indent=2) + "\n")
    elif fmt is Format.CSV:
        write_csv(rep, sys.stdout)
    else:
        print_table(rep)
