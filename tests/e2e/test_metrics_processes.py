"""Counters of several processes in one /metrics, on SQLite and PostgreSQL: ``optline worker`` (its calling
threads make the provider calls) and ``optline serve`` share ``PROMETHEUS_MULTIPROC_DIR``; the server's
/metrics reports the worker's provider calls beside its own webhook requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from optline.bootstrap import Container
from optline.services import campaigns
from tests.support import fake_providers as fp
from tests.support import outbound
from tests.support.server import serve

OPTLINE = str(Path(sys.executable).with_name("optline"))


def test_serve_reports_the_workers_provider_calls(
    live: Container, fake_server: fp.RemoteFake, tmp_path: Path
) -> None:
    outbound.seed(live, 7, time_zone=outbound.zone_where(True), us_state=None)
    with live.db.transaction() as conn:
        campaign = campaigns.create(conn, live.clock, program="deals", name="c1", template="Hi, 20% off")
        campaigns.start(conn, live.clock, campaign, public_url=live.settings.public_url)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "OPTLINE_PROVIDER": "twilio",
           "OPTLINE_TWILIO_ACCOUNT_SID": fp.TWILIO_SID, "OPTLINE_TWILIO_AUTH_TOKEN": fp.TWILIO_TOKEN,
           "OPTLINE_TWILIO_BASE_URL": fake_server.url}  # fmt: skip
    worker = subprocess.run(
        [OPTLINE, "worker", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            **env,
            "OPTLINE_DATABASE_URL": live.settings.database_url,
            "OPTLINE_ENV": "test",
            "OPTLINE_PUBLIC_URL": "https://acme.test",
        },
    )
    assert worker.returncode == 0, worker.stderr
    assert len(fake_server.received) == 7

    with serve(live.settings.database_url, **env) as server:
        assert (
            httpx.post(server.url + "/webhooks/twilio/sms", data={"Body": "STOP"}, timeout=30).status_code
            == 403
        )
        scraped = httpx.get(server.url + "/metrics", timeout=30)
    assert scraped.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    calls = ("optline_provider_call_seconds_count", (("outcome", "ok"), ("provider", "twilio")))
    assert samples[calls] == 7  # counted by the worker process
    refused = (
        "optline_webhook_requests_total",
        (("kind", "sms"), ("outcome", "forbidden"), ("provider", "twilio")),
    )
    assert samples[refused] == 1  # counted by the server
    assert samples[("optline_messages", (("provider", "twilio"), ("status", "sent")))] == 7  # the database
