"""A reply typed on the dashboard's simulated phone, sent the way ``optline inbound simulate`` sends it:
a signed simulator webhook request through the inbound path (signature check, classification, consent)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert

from optline.adapters.db.tables import simulator_messages
from optline.adapters.providers.simulator import webhook as simulator
from optline.adapters.providers.webhook_request import WebhookRequest, public_url
from optline.bootstrap import Container


def simulated_reply(container: Container, from_phone: str, to_phone: str, body: str) -> dict[str, Any]:
    from optline.entrypoints.api.webhooks import handle_inbound

    sid = "SM" + uuid.uuid4().hex
    payload, headers = simulator.encode(
        {"sid": sid, "from": from_phone, "to": to_phone, "body": body},
        container.settings.secret_key.get_secret_value(),
    )
    now = container.clock.now()
    request = WebhookRequest(
        method="POST", url=public_url(container.settings.public_url, "/webhooks/simulator/sms"), headers=headers,
        body=payload, received_at=now,
    )  # fmt: skip
    with container.db.transaction() as conn:  # the simulated phone's outbox, as the CLI records it
        conn.execute(insert(simulator_messages).values(
            direction="in", sid=sid, from_phone=from_phone[:20], to_phone=to_phone[:20], body=body,
            status="received", created_at=now,
        ))  # fmt: skip
    return handle_inbound(container, "simulator", request)
