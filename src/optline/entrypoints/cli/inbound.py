"""``optline classify [FILE]`` and ``optline inbound simulate``."""

from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

import typer
from sqlalchemy import insert

from optline.adapters.db.tables import simulator_messages
from optline.adapters.providers.simulator import webhook as simulator
from optline.adapters.providers.webhook_request import (
    PayloadError,
    SignatureError,
    WebhookRequest,
    public_url,
)
from optline.domain.phones import InvalidPhoneNumber, normalize
from optline.entrypoints.cli.common import console, container, fail

app = typer.Typer(help="Inbound replies: simulate one through the webhook path.", no_args_is_help=True)
classify_app = typer.Typer()


@classify_app.command("classify")
def classify(
    file: str = typer.Argument(None, help="one message per line; '-' or nothing: standard input"),
    language: str = typer.Option(
        None, help="language hint (en, es, fr, pt) for words several languages share"
    ),
) -> None:
    """Classify replies: one JSON object per input line (text, intent, confidence, language, reason, review)."""
    # Imported here: the classifier loads its lexicons at import (~0.2 s), which other commands need not pay.
    from optline.domain.classify import classify as classify_text

    if file in (None, "-"):
        # Bytes that are not UTF-8 become U+FFFD rather than a traceback halfway through a file.
        stream: TextIO = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"{file}: no such file (give a file of replies, one per line, or '-' for standard input)")
        stream = path.open(encoding="utf-8", errors="replace")
    out = sys.stdout
    try:
        for line in stream:
            text = line.rstrip("\r\n")
            c = classify_text(text, language_hint=language)
            out.write(
                json.dumps(
                    {
                        "text": text,
                        "intent": c.intent.value,
                        "confidence": c.confidence,
                        "language": c.language,
                        "reason": c.reason,
                        "review": c.review,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    finally:
        if stream is not sys.stdin:
            stream.close()


def _number(option: str, raw: str, region: str, *, short_code: bool = False) -> str:
    if short_code and raw.strip().isdigit() and 5 <= len(raw.strip()) <= 6:
        return raw.strip()
    try:
        return normalize(raw, region)
    except InvalidPhoneNumber as exc:
        fail(f"{option}: {exc}")


@app.command("simulate")
def simulate(
    from_: str = typer.Option(..., "--from", help="the person's phone number"),
    to: str = typer.Option(..., "--to", help="the program's sender number (or short code)"),
    body: str = typer.Option(..., "--body", help="the text of the reply"),
    as_json: bool = typer.Option(False, "--json", help="print the webhook's JSON answer instead"),
) -> None:
    """Receive a reply through the simulator provider: the same path as a provider's webhook."""
    from optline.entrypoints.api.webhooks import handle_inbound

    c = container()
    region = c.settings.default_region
    from_, to = _number("--from", from_, region), _number("--to", to, region, short_code=True)
    if not body.strip():
        fail("--body: the reply is empty")
    sid = "SM" + uuid.uuid4().hex
    payload, headers = simulator.encode({"sid": sid, "from": from_, "to": to, "body": body}, c.secret_key())
    now = c.clock.now()
    req = WebhookRequest(
        method="POST",
        url=public_url(c.settings.public_url, "/webhooks/simulator/sms"),
        headers=headers,
        body=payload,
        received_at=now,
    )
    with c.db.transaction() as conn:
        conn.execute(
            insert(simulator_messages).values(
                direction="in",
                sid=sid,
                from_phone=from_,
                to_phone=to,
                body=body,
                status="received",
                created_at=now,
            )
        )
    try:
        result = handle_inbound(c, "simulator", req)
    except (PayloadError, SignatureError) as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(result))
        return
    _print_outcome(c, from_, to, result)


def _print_outcome(c: Any, from_: str, to: str, result: dict[str, Any]) -> None:
    """What happened to the reply, as a person reads it."""
    from sqlalchemy import select

    from optline.adapters.db.tables import messages

    intent = result.get("intent") or "unclassified"
    console.print(
        f"{from_} → {to}: read as [bold]{intent.replace('_', ' ')}[/bold]"
        + (" (held for review)" if result.get("review") else "")
    )
    if result.get("status") == "duplicate":
        console.print("already received (same message id): nothing changed")
    if result.get("consent_event_id"):
        console.print(f"consent changed: ledger event #{result['consent_event_id']}")
    elif result.get("status") != "duplicate":
        console.print("consent unchanged")
    ids = list(result.get("replies") or [])
    if ids:
        with c.db.read() as conn:
            bodies = conn.execute(
                select(messages.c.body).where(messages.c.id.in_(ids)).order_by(messages.c.id)
            )
            for (text,) in bodies:
                console.print(f"reply queued: [italic]{text}[/italic]")
    else:
        console.print("no reply queued")
