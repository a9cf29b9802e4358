"""The dashboard's simulated phone: a reply typed there is sent the way ``optline inbound simulate`` sends it,
a signed simulator webhook request through the inbound path (signature check, classification, consent).

Mounted only when OPTLINE_PROVIDER=simulator (``Settings.uses_simulator``, entrypoints/web/__init__.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from sqlalchemy import insert
from starlette.responses import Response

from optline.adapters.db.tables import simulator_messages
from optline.adapters.providers.simulator import webhook as simulator
from optline.adapters.providers.webhook_request import WebhookRequest, public_url
from optline.bootstrap import Container
from optline.domain.phones import InvalidPhoneNumber, parse_phone
from optline.entrypoints.web.auth import CurrentUser, container_of, require_csrf
from optline.entrypoints.web.dashboard import _page
from optline.entrypoints.web.rendering import intent_label
from optline.services import dashboard as read

router = APIRouter(include_in_schema=False)


def simulated_reply(container: Container, from_phone: str, to_phone: str, body: str) -> dict[str, Any]:
    from optline.entrypoints.api.webhooks import handle_inbound

    sid = "SM" + uuid.uuid4().hex
    payload, headers = simulator.encode(
        {"sid": sid, "from": from_phone, "to": to_phone, "body": body},
        container.secret_key(),
    )
    now = container.clock.now()
    request = WebhookRequest(
        method="POST",
        url=public_url(container.settings.public_url, "/webhooks/simulator/sms"),
        headers=headers,
        body=payload,
        received_at=now,
    )
    with container.db.transaction() as conn:  # the simulated phone's outbox, as the CLI records it
        conn.execute(
            insert(simulator_messages).values(
                direction="in",
                sid=sid,
                from_phone=from_phone[:20],
                to_phone=to_phone[:20],
                body=body,
                status="received",
                created_at=now,
            )
        )
    return handle_inbound(container, "simulator", request)


def _simulator_page(request: Request, user: dict[str, Any], status_code: int = 200, **ctx: Any) -> Response:
    show = request.query_params.get("show", "")
    with container_of(request).db.read() as conn:
        log = read.simulator_log(conn, limit=50, direction=show or None)
        senders = sorted(
            {
                n
                for p in read.programs_summary(conn, container_of(request).clock.now())
                for n in (p["sender_numbers"] or [])
            }
        )
    ctx.setdefault("form", {"to": senders[0] if senders else ""})
    return _page(
        request, user, "simulator.html", "simulator", status_code, log=log, senders=senders, show=show, **ctx
    )


@router.get("/dashboard/simulator")
def simulator_page(request: Request, user: CurrentUser) -> Response:
    return _simulator_page(request, user)


@router.post("/dashboard/simulator/reply")
def simulator_reply(
    request: Request,
    user: CurrentUser,
    from_phone: Annotated[str, Form(alias="from")] = "",
    to: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Reply as a contact would: through the simulator's signed webhook, the path a real provider takes."""
    require_csrf(request, csrf)
    container = container_of(request)
    form = {"from": from_phone.strip(), "to": to.strip(), "body": body}
    try:
        sender = parse_phone(form["from"], container.settings.default_region).e164
    except InvalidPhoneNumber as exc:
        return _simulator_page(request, user, 400, form=form, error=f"From: {exc}")
    if not body.strip():
        return _simulator_page(request, user, 400, form=form, error="Type the reply to send.")
    result = simulated_reply(container, sender, form["to"], body)
    note = f"Understood as {intent_label(result.get('intent'))}"
    if result.get("review"):
        note += " — waiting in the review queue"
    return _simulator_page(request, user, form={"from": sender, "to": form["to"]}, flash_text=note + ".")
