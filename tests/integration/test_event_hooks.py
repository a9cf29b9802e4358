"""Outbound event webhooks on both engines (issue 17): events written in the transaction of their change,
signed per Standard Webhooks (checked with the `standardwebhooks` package), delivered exactly once to a
real receiver that is down and then up, every attempt recorded, replay with the same webhook-id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, event, func, select, update
from standardwebhooks.webhooks import Webhook

from optline.adapters.clock import FrozenClock
from optline.adapters.db.tables import consent_events, messages, webhook_attempts, webhook_deliveries
from optline.adapters.providers.base import StatusUpdate
from optline.bootstrap import Container
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.entrypoints.api.app import create_app
from optline.services import consent, event_hooks, receipts
from optline.services.event_hooks import DelivererConfig
from tests.support import outbox_rows, signing, web
from tests.support.hook_receiver import Receiver

PERSON, SENDER = "+14155550134", "+14155550100"
CONFIG = DelivererConfig(retry_base=timedelta(seconds=30), timeout=5.0)


@pytest.fixture
def clock() -> FrozenClock:
    # Real time: the standardwebhooks verifier refuses timestamps more than five minutes from its own clock.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as client:
        yield client


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    program = web.program(container, optout_scope="program")
    return {"program": program, "person": web.subscriber(container, program, PERSON)}


def register(container: Container, url: str, *events: str) -> event_hooks.CreatedEndpoint:
    with container.db.transaction() as conn:
        return event_hooks.create_endpoint(
            conn,
            container.clock,
            container.secret_box(),
            url=url,
            events=list(events or ["opt_out"]),
            development=False,
        )


def opt_out(container: Container, world: dict[str, Any]) -> None:
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=world["person"]["id"],
            program=world["program"],
            action=Action.OPT_OUT,
            channel=Channel.API,
            evidence={"source": "test"},
        )


def rows(container: Container, table: Any) -> list[dict[str, Any]]:
    with container.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


def deliver(container: Container, http: httpx.Client) -> event_hooks.DeliveryCounts:
    return event_hooks.deliver_due(container.db, container.clock, http, CONFIG, container.secret_box())


def test_nothing_is_written_when_no_endpoint_subscribes(container: Container, world: dict[str, Any]) -> None:
    register(container, "https://crm.example.com/hooks", "opt_in")  # a subscriber, but not to opt-outs
    opt_out(container, world)
    assert rows(container, webhook_deliveries) == []
    web.subscriber(container, web.program(container, name="news"), "+14155550135")  # an opt-in: queued
    (delivery,) = rows(container, webhook_deliveries)
    assert (
        delivery["event_type"] == "opt_in" and json.loads(delivery["body"])["data"]["phone"] == "+14155550135"
    )


def test_a_receiver_down_then_failing_then_up_gets_the_event_once_signed(
    container: Container, world: dict[str, Any], receiver: Receiver, http: httpx.Client, clock: FrozenClock
) -> None:
    endpoint = register(container, receiver.url)
    opt_out(container, world)

    # Down: nothing listens on the port (connection refused).
    assert deliver(container, http).retrying == 1
    assert deliver(container, http).attempted == 0  # not due again before its backoff
    receiver.answer = 500
    receiver.start()
    clock.advance(seconds=30)
    assert deliver(container, http).retrying == 1
    receiver.answer = 200
    clock.advance(seconds=59)
    assert deliver(container, http).attempted == 0  # the second backoff is 60 s
    clock.advance(seconds=1)
    assert deliver(container, http).delivered == 1
    clock.advance(days=2)
    assert deliver(container, http).attempted == 0  # delivered: never sent again

    (got,) = receiver.accepted()
    assert len(receiver.received) == 2 and len({r.headers["webhook-id"] for r in receiver.received}) == 1
    payload = Webhook(endpoint.secret).verify(got.body, got.headers)  # the spec's own verifier
    assert payload["type"] == "opt_out"
    assert payload["data"]["phone"] == PERSON and payload["data"]["program"] == "deals"
    assert payload["data"]["status"] == "unsubscribed" and payload["data"]["channel"] == "api"
    with pytest.raises(Exception, match="signature"):
        Webhook(event_hooks.rules.new_secret()).verify(got.body, got.headers)  # another secret: refused

    (delivery,) = rows(container, webhook_deliveries)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert delivery["message_id"] == got.headers["webhook-id"]
    attempts = rows(container, webhook_attempts)
    assert [a["status_code"] for a in attempts] == [None, 500, 200]
    assert "ConnectError" in attempts[0]["error"]
    assert attempts[1]["response_snippet"] == "receiver is failing on purpose"
    assert attempts[2]["response_snippet"] == "ok" and all(a["duration_ms"] >= 0 for a in attempts)


def test_replay_sends_the_same_webhook_id_again(
    container: Container, world: dict[str, Any], receiver: Receiver, http: httpx.Client
) -> None:
    endpoint = register(container, receiver.url)
    receiver.start()
    opt_out(container, world)
    assert deliver(container, http).delivered == 1
    (delivery,) = rows(container, webhook_deliveries)
    with container.db.transaction() as conn:
        event_hooks.replay(conn, container.clock, delivery["id"])
    assert deliver(container, http).delivered == 1
    first, again = receiver.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == delivery["message_id"]
    assert first.body == again.body
    Webhook(endpoint.secret).verify(again.body, again.headers)
    assert [a["replay"] for a in rows(container, webhook_attempts)] == [False, True]
    with (
        container.db.transaction() as conn,
        pytest.raises(event_hooks.HookError, match="no webhook delivery 999"),
    ):
        event_hooks.replay(conn, container.clock, 999)


def test_retries_stop_after_a_day_and_the_delivery_stays_replayable(
    container: Container, world: dict[str, Any], receiver: Receiver, http: httpx.Client, clock: FrozenClock
) -> None:
    register(container, receiver.url)
    opt_out(container, world)
    start = clock.now()
    while deliver(container, http).failed == 0:
        clock.advance(hours=1)
        assert clock.now() - start < timedelta(days=2), "still retrying after two days"
    (delivery,) = rows(container, webhook_deliveries)
    attempts = rows(container, webhook_attempts)
    assert delivery["status"] == "failed" and delivery["attempts"] == len(attempts) > 5
    last = attempts[-1]["attempted_at"]
    assert timedelta(hours=20) < last.replace(tzinfo=UTC) - start <= timedelta(days=1)
    receiver.start()
    with container.db.transaction() as conn:
        event_hooks.replay(conn, container.clock, delivery["id"])
    assert deliver(container, http).delivered == 1


def test_two_deliverers_at_once_send_each_event_exactly_once(
    container: Container, world: dict[str, Any], receiver: Receiver, http: httpx.Client
) -> None:
    register(container, receiver.url, "opt_in")
    receiver.start()
    program = world["program"]
    for n in range(30):
        web.subscriber(container, program, f"+1415555{n + 200:04d}")
    barrier = threading.Barrier(2)

    def run() -> None:
        with httpx.Client() as own:
            barrier.wait()
            while event_hooks.deliver_due(
                container.db, container.clock, own, DelivererConfig(batch_size=4), container.secret_box()
            ).attempted:
                pass

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert {d["status"] for d in rows(container, webhook_deliveries)} == {"delivered"}


# -- the event is written in the transaction of its change ------------------------------------------------


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container), raise_server_exceptions=False) as c:
        yield c


def stop_via_twilio(client: TestClient, clock: FrozenClock, sid: str = "SMstop") -> Any:
    fx = signing.inbound_fixture("twilio", sid=sid, from_=PERSON, to=SENDER, body="STOP")
    s = signing.sign("twilio", fx, "http://testserver", now=clock.now().timestamp())
    return client.request(s.method, s.path, headers=s.headers, content=s.body)


def test_a_signed_stop_queues_its_opt_out_event_in_the_same_transaction(
    container: Container, world: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    register(container, "https://crm.example.com/hooks", "opt_out")
    container.secret_key()  # created (and committed) before the failing commits below

    def refuse(conn: Connection) -> None:
        if conn.get_execution_options().get("optline_write"):
            raise RuntimeError("commit failed (test)")

    event.listen(container.db.engine, "commit", refuse)  # the transaction rolls back
    try:
        assert stop_via_twilio(client, clock).status_code >= 500  # the provider will retry
    finally:
        event.remove(container.db.engine, "commit", refuse)
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one() == 0
        assert (
            conn.execute(
                select(func.count()).select_from(consent_events).where(consent_events.c.action == "opt_out")
            ).scalar_one()
            == 0
        )

    assert stop_via_twilio(client, clock).status_code == 200  # the retry commits: the change and its event
    (opt_out_event,) = [e for e in rows(container, consent_events) if e["action"] == "opt_out"]
    (delivery,) = rows(container, webhook_deliveries)
    body = json.loads(delivery["body"])
    assert body["type"] == "opt_out" and body["data"]["consent_event_id"] == opt_out_event["id"]
    assert body["data"]["channel"] == "sms_keyword" and delivery["status"] == "pending"


def test_review_and_message_outcomes_are_events_too(
    container: Container, world: dict[str, Any], client: TestClient, clock: FrozenClock
) -> None:
    register(
        container, "https://crm.example.com/hooks", "review.needed", "message.delivered", "message.failed"
    )
    fx = signing.inbound_fixture("twilio", sid="SMno", from_=PERSON, to=SENDER, body="No")  # ambiguous
    s = signing.sign("twilio", fx, "http://testserver", now=clock.now().timestamp())
    assert client.request(s.method, s.path, headers=s.headers, content=s.body).status_code == 200
    with container.db.transaction() as conn:
        ids = []
        for n in (1, 2):
            mid = outbox_rows.message(
                conn, program=world["program"], contact=world["person"], at=clock.now(), status="sent"
            )
            conn.execute(
                update(messages)
                .where(messages.c.id == mid)
                .values(provider="twilio", provider_message_id=f"SM{n}")
            )
            ids.append(mid)
        receipts.record_status(conn, clock, StatusUpdate("twilio", "SM1", "delivered"))
        receipts.record_status(conn, clock, StatusUpdate("twilio", "SM2", "undelivered", error_code="30003"))
        receipts.record_status(conn, clock, StatusUpdate("twilio", "SM1", "delivered"))  # a repeat: no event
    bodies = [json.loads(d["body"]) for d in rows(container, webhook_deliveries)]
    assert [b["type"] for b in bodies] == ["review.needed", "message.delivered", "message.failed"]
    assert bodies[0]["data"]["body"] == "No" and bodies[0]["data"]["phone"] == PERSON
    assert bodies[1]["data"]["message_id"] == ids[0] and bodies[1]["data"]["status"] == "delivered"
    assert bodies[2]["data"]["message_id"] == ids[1] and bodies[2]["data"]["error_code"] == "30003"


def test_the_readme_receiver_accepts_a_real_delivery_and_refuses_another_secret(
    container: Container, world: dict[str, Any], http: httpx.Client
) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("```python\nimport base64, hashlib", 1)[1].split("```", 1)[0]
    code = "import base64, hashlib" + code
    assert code.rstrip().endswith("serve_forever()") and len(code.strip().splitlines()) <= 12
    # Listening before the URL is registered (a port chosen and released could be taken meanwhile); the
    # README's handler, which needs the endpoint's secret, is put in before it serves.
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_port}/"
    endpoint = register(container, url)
    namespace: dict[str, Any] = {}
    exec(
        code.rstrip().rsplit("\n", 1)[0].replace("whsec_REPLACE_WITH_YOUR_SECRET", endpoint.secret), namespace
    )
    server.RequestHandlerClass = namespace["Receiver"]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        register(container, url)  # the same URL under another secret: its deliveries must be refused
        opt_out(container, world)
        counts = deliver(container, http)
    finally:
        server.shutdown()
        server.server_close()
    assert (counts.delivered, counts.retrying) == (1, 1)
    codes = {d["endpoint_id"]: d["last_status_code"] for d in rows(container, webhook_deliveries)}
    assert codes == {endpoint.id: 204, endpoint.id + 1: 401}


def test_an_endpoint_registered_by_another_process_gets_events_within_the_cache_ttl(
    container: Container, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optline.adapters.db.database import Database, make_engine

    now = [time.monotonic()]  # this process's clock stands still until the test moves it
    monkeypatch.setattr(event_hooks.time, "monotonic", lambda: now[0])
    opt_out(container, world)  # this process looks up the subscribers: nobody
    other = Database(make_engine(container.settings.database_url))  # another process's connection pool
    try:
        with other.transaction() as conn:
            event_hooks.create_endpoint(
                conn,
                container.clock,
                container.secret_box(),
                url="https://crm.example.com/hooks",
                events=["opt_in"],
                development=False,
            )
        with other.read() as conn:  # the registering process itself sees it at once
            assert event_hooks.subscribers(conn, event_hooks.rules.EventType.OPT_IN) != []
    finally:
        other.dispose()
    news = web.program(container, name="news")
    web.subscriber(container, news, "+14155550136")  # within the TTL: this process has not seen it yet
    assert rows(container, webhook_deliveries) == []
    now[0] += event_hooks.SUBSCRIBERS_TTL + 0.01  # once the TTL has passed, it is read again
    web.subscriber(container, news, "+14155550137")
    (delivery,) = rows(container, webhook_deliveries)
    assert delivery["event_type"] == "opt_in" and "+14155550137" in delivery["body"]
