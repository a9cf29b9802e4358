"""``optline proof PHONE``: the consent evidence for one phone number (services.proof)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from optline.domain.checkpoint import CheckpointError
from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints import proof_formats
from optline.entrypoints.cli.common import console, container, fail
from optline.services import checkpoints
from optline.services import proof as proof_service

app = typer.Typer()


@app.command()
def proof(
    phone: str = typer.Argument(..., help="the phone number, in any common format"),
    fmt: str = typer.Option("text", "--format", help="text, json (for machines), html or pdf (to print)"),
    out: Path | None = typer.Option(None, help="write here instead of standard output"),
    paper: str = typer.Option("A4", help="PDF paper: A4 or Letter"),
    checkpoints_file: Path | None = typer.Option(
        None,
        "--checkpoints",
        help="verify against this checkpoint log (default: the configured log file, "
        "else the database's signed copies)",
    ),
) -> None:
    """Every consent event with its evidence, every message with the consent that allowed it, each opt-out
    and when suppression took effect, and the chain verified against the latest signed checkpoint."""
    if fmt not in proof_formats.FORMATS:
        fail(f"unknown format {fmt!r}: use one of {', '.join(proof_formats.FORMATS)}")
    if paper.lower() not in ("a4", "letter"):
        fail(f"unknown paper {paper!r}: use A4 or Letter")
    c = container()
    try:
        with c.db.read() as conn:
            found, problems, source = checkpoints.for_proof(c, conn, checkpoints_file)
            bundle = proof_service.build(
                conn,
                phone,
                c.settings.default_region,
                now=c.clock.now(),
                checkpoints=found,
                checkpoint_problems=problems,
                checkpoint_source=source,
            )
    except (InvalidPhoneNumber, proof_service.UnknownContact, CheckpointError) as exc:
        fail(str(exc))
    try:
        data = (
            proof_formats.to_pdf(bundle, "Letter" if paper.lower() == "letter" else "A4")
            if fmt == "pdf"
            else proof_formats.render(bundle, fmt)
        )
    except proof_formats.FontMissing as exc:
        fail(str(exc))
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    out.write_bytes(data)
    verdict = "verified" if bundle["verification"]["ok"] else "[red]VERIFICATION FAILED[/red]"
    console.print(
        f"wrote {out} ({fmt}, {len(bundle['consent_events'])} consent events, "
        f"{len(bundle['messages'])} messages; {verdict})",
        highlight=False,
    )
