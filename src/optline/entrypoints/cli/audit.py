"""``optline audit``: the list review (who should not be on a sendable list, why, and what to do)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.table import Table

from optline.domain.csv_safety import SafeDictWriter
from optline.entrypoints.cli.common import console, container, exit_code, fail
from optline.entrypoints.cli.report import Format
from optline.services import audit as audit_service
from optline.services.programs import list_programs, require_program

app = typer.Typer()

CSV_COLUMNS = ["reason", "contact_id", "phone", "program_id", "detail", "action", "fix", "fixed", "proof"]


@app.command("audit")
def audit(
    program: str = typer.Option(None, help="only this program"),
    fmt: Format = typer.Option(Format.TABLE, "--format", help="table, csv or json"),
    fix: bool = typer.Option(
        False, "--fix", help="apply the safe fixes (review holds, cancel queued messages)"
    ),
    strict: bool = typer.Option(False, help="exit 1 when there are findings (for cron and CI)"),
) -> None:
    """Review the lists: consent evidence, stale consent, opted-out contacts still queued, bad numbers,
    duplicates, Do-Not-Call, reassigned numbers, overdue reviews. The run is stored for the dashboard."""
    c = container()
    prog = None
    if program:
        with c.db.read() as conn:
            try:
                prog = require_program(conn, program)
            except LookupError as exc:
                fail(str(exc))
    result = audit_service.run(c.db, c.clock, audit_service.config_from(c.settings), program=prog, fix=fix)
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    elif fmt is Format.CSV:
        write_csv(result.findings, sys.stdout)
    else:
        with c.db.read() as conn:
            names = {p["id"]: p["name"] for p in list_programs(conn)}
        table = Table(
            "reason",
            "contact",
            "program",
            "finding",
            "what to do",
            "fixed",
            title=f"audit run {result.id}: {len(result.findings)} findings",
            title_justify="left",
        )
        for f in result.findings:
            table.add_row(
                f.reason.value,
                f"{f.phone} (#{f.contact_id})",
                names.get(f.program_id or 0, ""),
                f.detail,
                f.action,
                f.fixed or "",
            )
        console.print(table)
        for reason, n in sorted(result.summary.items()):
            console.print(f"  {reason}: {n}")
        if fix:
            console.print(f"fixed {result.fixed} (review holds in the ledger, cancelled messages)")
    if strict and result.findings:
        exit_code(1)


def write_csv(findings: list[audit_service.Finding], out: Any) -> None:
    """Findings as CSV; phones and details are outside text, so cells are escaped for spreadsheets."""
    writer = SafeDictWriter(out, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for f in findings:
        writer.writerow({**f.as_dict(), "proof": json.dumps(f.proof, default=str)})
