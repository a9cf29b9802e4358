"""``optline classify [FILE]`` and ``optline inbound simulate``."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

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
from optline.domain.classify import classify as classify_text
from optline.entrypoints.cli.common import console, container, fail

app = typer.Typer(help="Inbound replies: simulate one through the webhook path.", no_args_is_help=True)
classify_app = typer.Typer()


@classify_app.command("classify")
def classify(
    file: Path = typer.Argument(
        None,
        exists=True,
        dir_okay=False,
        readable=True,
        help="one message per line (default: standard input)",
    ),
    language: str = typer.Option(
        None, help="language hint (en, es, fr, pt) for words several languages share"
    ),
) -> None:
    """Classify replies: one JSON object per input line (text, intent, confidence, language, reason, review)."""
    stream = file.open(encoding="utf-8", errors="replace") if file else sys.stdin
    out = sys.stdout
    try:
        for line in stream:
            text = line.rstrip("\r\n")
            c = classify_text(text, language_hint=language)
            out.write(json.dumps({
                "text": text, "intent": c.intent.value, "confidence": c.confidence, "language": c.language,
                "reason": c.reason, "review": c.review,
            }, ensure_ascii=False) + "\n")  # fmt: skip
    finally:
        if file:
            stream.close()


@app.command("simulate")
def simulate(
    from_: str = typer.Option(..., "--from", help="the person's phone number"),
    to: str = typer.Option(..., "--to", help="the program's sender number"),
    body: str = typer.Option(..., "--body", help="the text of the reply"),
) -> None:
    """Receive a reply through the simulator provider: the same path as a provider's webhook."""
    from optline.entrypoints.api.webhooks import handle_inbound

    c = container()
    sid = "SM" + uuid.uuid4().hex
    payload, headers = simulator.encode({"sid": sid, "from": from_, "to": to, "body": body}, c.secret_key())
    now = c.clock.now()
    req = WebhookRequest(
        method="POST", url=public_url(c.settings.public_url, "/webhooks/simulator/sms"), headers=headers,
        body=payload, received_at=now,
    )  # fmt: skip
    with c.db.transaction() as conn:
        conn.execute(insert(simulator_messages).values(
            direction="in", sid=sid, from_phone=from_[:20], to_phone=to[:20], body=body, status="received",
            created_at=now,
        ))  # fmt: skip
    try:
        result = handle_inbound(c, "simulator", req)
    except (PayloadError, SignatureError) as exc:
        fail(str(exc))
    console.print_json(json.dumps(result))
