"""Delivery receipts on both engines (issue 12 item 4): a receipt that arrives before dispatch stored its
message's provider id is kept and applied when the id is stored; an opt-out receipt becomes a ledger
opt-out from its own numbers even when its message never matches; the webhook answers 2xx only after the
kept receipt is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import ClientSession
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import tables
from optline.adapters.db.tables import consent_events, messages, subscriptions
from optline.adapters.providers.base import OutboundSms, Sender, SendResult, StatusUpdate
from optline.adapters.providers.twilio.send import TwilioSender
from optline.adapters.providers.vonage.send import VonageSender
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import inbound
from optline.services.dispatch import DispatchConfig, Dispatcher
from optline.services.programs import create_program
from tests.integration.test_dispatch import drain, start_campaign
from tests.support import fake_providers as fp
from tests.support import outbound, signing

SENDER = "+14155550100"  # outbound.make_program's sender number


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def post(client: TestClient, clock: FrozenClock, provider: str, fx: dict[str, Any]) -> Any:
    s = signing.sign(provider, fx, "http://testserver", now=clock.now().timestamp())
    return client.request(s.method, s.path, headers=s.headers, content=s.body)


def opt_outs(container: Container, contact_id: int) -> list[Any]:
    with container.db.read() as conn:
        return list(
            conn.execute(
                select(consent_events).where(
                    consent_events.c.contact_id == contact_id, consent_events.c.action == "opt_out"
                )
            )
        )


def kept(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return list(conn.execute(select(tables.pending_receipts)))


class ReceiptFirst:
    """A provider whose status callback reaches our webhook before its send call has returned to us: the
    race a fast carrier, a slow network or a busy worker makes. ``post(provider_message_id, sms)`` is the
    webhook's side, run in its own transaction before ``send`` returns."""

    def __init__(self, inner: Sender, post: Callable[[str, OutboundSms], Any]) -> None:
        self.inner, self.post, self.name = inner, post, inner.name
        self.reconcile_after = inner.reconcile_after

    async def send(self, http: ClientSession, sms: OutboundSms) -> SendResult:
        result = await self.inner.send(http, sms)
        await asyncio.to_thread(self.post, result.provider_message_id, sms)  # the webhook's own thread
        return result

    async def find_sent(self, http: ClientSession, sms: OutboundSms, since: datetime) -> str | None:
        return await self.inner.find_sent(http, sms, since)


def dispatcher(container: Container, sender: Sender) -> Dispatcher:
    return Dispatcher(
        container.db, container.clock, sender, DispatchConfig(public_url="https://acme.test"), worker_id="w1"
    )


def test_a_receipt_that_arrives_before_the_provider_id_is_stored_is_kept_and_applied(
    container: Container, fake: fp.FakeProviders
) -> None:
    outbound.seed(container, 2)
    start_campaign(container)
    answers: list[Any] = []

    def delivered(provider_message_id: str, sms: OutboundSms) -> None:
        with container.db.transaction() as conn:  # what /webhooks/twilio/status runs
            update = StatusUpdate(
                provider="twilio", provider_message_id=provider_message_id, status="delivered"
            )
            answers.append(inbound.record_status(conn, container.clock, update))

    inner = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    assert drain(dispatcher(container, ReceiptFirst(inner, delivered))).sent == 2
    assert [a.message_id for a in answers] == [None, None]  # the message was not known yet when it came
    with container.db.read() as conn:
        rows = list(conn.execute(select(messages)))
    # (In any order: the calls run concurrently.)
    assert sorted((r.status, r.provider_message_id) for r in rows) == sorted(
        ("delivered", m["sid"]) for m in fake.received
    )
    assert all(r.delivered_at is not None for r in rows)
    assert kept(container) == []  # applied, then let go


def test_an_early_opt_out_receipt_is_recorded_at_once_and_applied_to_its_message_later(
    container: Container, fake: fp.FakeProviders, client: TestClient
) -> None:
    _program, ids = outbound.seed(container, 2)
    fake.state.opted_out.add(outbound.phone(0).lstrip("+"))  # Vonage: accepted, then a DLR with err-code 9
    start_campaign(container)
    seen: list[int] = []

    def dlr(provider_message_id: str, sms: OutboundSms) -> None:
        for receipt in fake.receipts:
            if receipt["params"]["messageId"] == provider_message_id:
                assert post(client, container.clock, "vonage", receipt).status_code == 200
                seen.append(len(opt_outs(container, ids[0])))

    inner = VonageSender(fp.VONAGE_KEY, fp.VONAGE_SECRET, fake.url)
    drain(dispatcher(container, ReceiptFirst(inner, dlr)))
    assert seen == [1]  # the opt-out was in the ledger before dispatch even stored the message id
    with container.db.read() as conn:
        row = conn.execute(select(messages).where(messages.c.contact_id == ids[0])).one()
        sub = conn.execute(
            select(subscriptions.c.status).where(subscriptions.c.contact_id == ids[0])
        ).scalar()
    assert (row.status, row.error_code) == ("failed", "9") and sub == "unsubscribed"
    [event] = opt_outs(container, ids[0])  # one opt-out, not one per receipt handling
    assert event.channel == "provider" and event.evidence["error_code"] == "9"
    assert kept(container) == [] and opt_outs(container, ids[1]) == []


def _twilio(
    sid: str, to: str, sender: str
) -> dict[str, Any]:  # https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "failed", "ErrorCode": "21610", "To": to,
              "From": sender, "AccountSid": fp.TWILIO_SID, "ApiVersion": "2010-04-01"}  # fmt: skip
    return {"path": "/webhooks/twilio/status", "params": params}


def _telnyx(
    sid: str, to: str, sender: str
) -> dict[str, Any]:  # https://developers.telnyx.com/api/errors/40300
    payload = {
        "data": {
            "event_type": "message.finalized",
            "id": f"ev-{sid}",
            "record_type": "event",
            "payload": {
                "id": sid,
                "direction": "outbound",
                "type": "SMS",
                "from": {"phone_number": sender},
                "to": [{"phone_number": to, "status": "delivery_failed"}],
                "errors": [{"code": "40300", "title": "Blocked due to STOP message"}],
            },
        }
    }
    return {"path": "/webhooks/telnyx/status", "payload": payload}


# Each provider's opt-out receipt, built as the provider documents it (the numbers in its own format).
OPT_OUT_RECEIPTS: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "vonage": lambda sid, to, sender: fp.vonage_opt_out_receipt(sid, to.lstrip("+"), sender.lstrip("+")),
    "plivo": lambda sid, to, sender: fp.plivo_opt_out_receipt(sid, to.lstrip("+"), sender.lstrip("+")),
    "telnyx": _telnyx,
    "twilio": _twilio,
}


@pytest.mark.parametrize("provider", list(OPT_OUT_RECEIPTS))
def test_an_opt_out_receipt_for_an_unknown_message_opts_out_the_numbers_on_it(
    container: Container, client: TestClient, provider: str
) -> None:
    program, ids = outbound.seed(container, 1)
    receipt = OPT_OUT_RECEIPTS[provider](f"never-stored-{provider}", outbound.phone(0), SENDER)
    first = post(client, container.clock, provider, receipt)
    assert first.status_code == 200, first.text
    assert post(client, container.clock, provider, receipt).status_code == 200  # delivered twice
    [event] = opt_outs(container, ids[0])
    assert (event.channel, event.program_id) == ("provider", program["id"])
    assert event.evidence["recipient"] == outbound.phone(0) and event.evidence["provider"] == provider
    [pending] = kept(container)  # still kept: the message may yet be stored
    assert pending.opted_out and pending.consent_event_id == event.id


def test_an_opt_out_receipt_from_a_sender_no_program_owns_stops_every_subscribed_program(
    container: Container, client: TestClient
) -> None:
    deals, ids = outbound.seed(container, 1)
    with container.db.transaction() as conn:
        news = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme",
            sender_numbers=["+14155550101"],
            optout_scope="program",
        )
        outbound.subscribe(conn, container.clock, news, ids)
    receipt = fp.plivo_opt_out_receipt("uuid-unknown", outbound.phone(0).lstrip("+"), "14155550199")
    assert post(client, container.clock, "plivo", receipt).status_code == 200
    assert sorted(e.program_id for e in opt_outs(container, ids[0])) == sorted([deals["id"], news["id"]])


def test_the_status_webhook_answers_only_after_the_kept_receipt_is_committed(container: Container) -> None:
    outbound.seed(container, 1)
    receipt = fp.vonage_opt_out_receipt("0B00000000ABCDEF", outbound.phone(0).lstrip("+"), SENDER.lstrip("+"))
    signed = signing.sign("vonage", receipt, "http://testserver", now=container.clock.now().timestamp())
    app = create_app(container)
    at_start: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": signed.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            # The moment the answer starts: what does another connection see?
            with container.db.read() as conn:
                at_start["status"] = message["status"]
                at_start["opt_outs"] = conn.execute(
                    select(func.count())
                    .select_from(consent_events)
                    .where(consent_events.c.action == "opt_out")
                ).scalar()
                at_start["kept"] = conn.execute(
                    select(func.count()).select_from(tables.pending_receipts)
                ).scalar()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": signed.method,
        "scheme": "http", "path": signed.path, "raw_path": signed.path.encode(), "query_string": b"",
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in signed.headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert at_start == {"status": 200, "kept": 1, "opt_outs": 1}
