"""/metrics after real activity, on SQLite and PostgreSQL: a campaign handed to the fake Twilio server by a
pool of calling threads, a signed STOP and a forged one through the webhook route, the queue and the ledger digest;
and who may read it (a token, or loopback only)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from optline.adapters.clock import FrozenClock, SystemClock
from optline.adapters.db import ledger
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import campaigns, outbox
from optline.services.dispatch import DispatchConfig, Dispatcher
from optline.services.outbox import Kind
from tests.support import fake_providers as fp
from tests.support import outbound, signing

ROOT = Path(__file__).resolve().parents[2]
SENDER = "+14155550100"
LOOPBACK = ("127.0.0.1", 50000)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def fake() -> Iterator[fp.FakeProviders]:
    with fp.FakeProviders(latency=0) as server:  # not a latency test
        yield server


def scrape(container: Container, **headers: str) -> Samples:
    with TestClient(create_app(container), client=LOOPBACK) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, default: float = 0.0, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), default)


def test_metrics_after_a_campaign_and_a_stop(container: Container, fake: fp.FakeProviders) -> None:
    container.clock = SystemClock()
    outbound.seed(container, 6, time_zone=outbound.zone_where(True), us_state=None)
    fake.state.opted_out.add(outbound.phone(0))  # Twilio refuses it: 21610, an opted_out error
    before = scrape(container)  # in-process instruments are per process: compare with what they were
    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, container.clock, program="deals", name="c1", template="Hi, 20% off")
        campaigns.start(conn, container.clock, campaign, public_url=container.settings.public_url)
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake.url)
    config = DispatchConfig(public_url="https://acme.test", concurrency=4, batch_size=4)
    dispatcher = Dispatcher(container.db, container.clock, sender, config, worker_id="w1")
    while dispatcher.run_once().claimed:
        pass
    dispatcher.close()
    assert len(fake.received) == 5

    fx = signing.inbound_fixture("twilio", sid="SMstop1", from_=outbound.phone(3), to=SENDER, body="STOP")
    signed = signing.sign("twilio", fx, "http://testserver")
    with TestClient(create_app(container)) as client:
        ok = client.request(signed.method, signed.path, headers=signed.headers, content=signed.body)
        forged = client.request(
            signed.method,
            signed.path,
            content=signed.body,
            headers={**signed.headers, "X-Twilio-Signature": "forged"},
        )
    assert (ok.status_code, forged.status_code) == (200, 403)
    after = scrape(container)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Provider calls: measured in the calling threads, counted by the worker as it records them.
    assert grew("optline_provider_call_seconds_count", provider="twilio", outcome="ok") == 5
    assert grew("optline_provider_call_seconds_count", provider="twilio", outcome="opted_out") == 1
    assert grew("optline_provider_call_seconds_sum", provider="twilio", outcome="ok") > 0
    assert grew("optline_provider_errors_total", provider="twilio", kind="opted_out") == 1
    # Webhooks by outcome, with their latency; the classifier's intent of the one recorded.
    assert grew("optline_webhook_requests_total", provider="twilio", kind="sms", outcome="recorded") == 1
    assert grew("optline_webhook_requests_total", provider="twilio", kind="sms", outcome="forbidden") == 1
    assert grew("optline_webhook_request_seconds_count", provider="twilio", kind="sms") == 2
    assert grew("optline_inbound_intents_total", intent="optout") == 1
    # From the database: the whole installation.
    assert value(after, "optline_database_up") == 1
    assert value(after, "optline_messages", status="sent", provider="twilio") == 5
    assert value(after, "optline_messages", status="suppressed", provider="twilio") == 1
    assert value(after, "optline_opt_outs_total", channel="sms_keyword") == 1
    assert value(after, "optline_opt_outs_total", channel="provider") == 1
    assert value(after, "optline_queue_depth", lane="bulk") == 0
    assert value(after, "optline_queue_depth", lane="reply") == 1  # the STOP's confirmation, not sent yet


def test_queue_review_and_digest_gauges(container: Container, clock: FrozenClock) -> None:
    program, ids = outbound.seed(container, 3)
    start = clock.now()
    with container.db.transaction() as conn:
        for i, (cid, kind) in enumerate(zip(ids, (Kind.MARKETING, Kind.MARKETING, Kind.HELP), strict=True)):
            outbox.enqueue(
                conn,
                clock,
                program_id=program["id"],
                contact_id=cid,
                to_phone=outbound.phone(i),
                kind=kind,
                body="hello",
                idempotency_key=f"k{i}",
            )
            clock.advance(seconds=30)
    no_digest = scrape(container)
    assert math.isnan(value(no_digest, "optline_ledger_digest_age_seconds", default=0.0))
    with container.db.transaction() as conn:
        ledger.record_digest(conn, clock.now())
    with TestClient(create_app(container)) as client:  # an ambiguous reply waits for an operator
        fx = signing.inbound_fixture("twilio", sid="SMno", from_=outbound.phone(1), to=SENDER, body="No")
        signed = signing.sign("twilio", fx, "http://testserver", now=clock.now().timestamp())
        assert client.request(
            signed.method, signed.path, headers=signed.headers, content=signed.body
        ).is_success
    clock.advance(seconds=120)
    samples = scrape(container)
    assert value(samples, "optline_queue_depth", lane="bulk") == 2
    assert value(samples, "optline_queue_depth", lane="reply") == 1
    now = clock.now()
    assert value(samples, "optline_queue_oldest_age_seconds", lane="bulk") == (now - start).total_seconds()
    assert value(samples, "optline_queue_oldest_age_seconds", lane="reply") == 120 + 30
    assert value(samples, "optline_ledger_digest_age_seconds") == 120
    assert value(samples, "optline_review_queue_size") == 1
    assert value(samples, "optline_messages", status="queued", provider="none") == 3


def test_metrics_need_the_token_when_one_is_set(db_url: str, clock: FrozenClock) -> None:
    token = "scrape-token-0123456789abcdef"
    c = build(Settings(env="test", database_url=db_url, metrics_token=token), clock=clock)
    try:
        app = create_app(c)
        local = TestClient(app, client=LOOPBACK)  # a token, once set, is required even from loopback
        missing = local.get("/metrics")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert local.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert local.get("/metrics", headers={"Authorization": token}).status_code == 401  # no scheme
        remote = TestClient(app, client=("203.0.113.7", 41000))
        good = remote.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and "optline_database_up 1.0" in good.text
    finally:
        c.close()


def test_metrics_without_a_token_answer_loopback_only(container: Container) -> None:
    app = create_app(container)
    refused = TestClient(app, client=("203.0.113.7", 41000)).get("/metrics")
    assert refused.status_code == 403 and "OPTLINE_METRICS_TOKEN" in refused.text
    assert TestClient(app, client=("::1", 41000)).get("/metrics").status_code == 200
    assert TestClient(app, client=LOOPBACK).get("/metrics").status_code == 200


def test_the_sample_dashboard_uses_only_exported_names(container: Container) -> None:
    with TestClient(create_app(container), client=LOOPBACK) as client:
        text = client.get("/metrics").text
    exported = {re.sub(r"_total$", "", name) for name in re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE)}
    dashboard = json.loads((ROOT / "deploy" / "grafana-optline.json").read_text(encoding="utf-8"))
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\boptline_\w+", target["expr"])
    }
    assert len(used) >= 10 and used <= exported, used - exported
