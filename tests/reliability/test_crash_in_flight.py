"""A worker killed (SIGKILL) in the middle of its calls, with K calls in flight against a slow fake Twilio,
then a new worker: every message goes out exactly once (issues 13 and 18).

What the kill leaves: messages marked ``sending`` with their hand-over time whose calls may or may not
have reached the provider (the fake accepts a call even when the caller has gone). When their lease
expires the next worker claims them, checks them again, and reconciles with the provider
(``find_sent``: Twilio's message list by recipient) before any resend, so the ones accepted are recorded
with the provider's own id and only the others are sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import contacts, messages
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import campaigns
from tests.support import fake_providers as fp
from tests.support import outbound

ROOT = Path(__file__).resolve().parents[2]
COUNT = 240


@pytest.fixture
def live(db_url: str) -> Iterator[Container]:
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
    yield c
    c.close()


def start_worker(db_url: str, fake: fp.RemoteFake) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_ENV": "development", "OPTLINE_PROVIDER": "twilio",
           "OPTLINE_TWILIO_ACCOUNT_SID": fp.TWILIO_SID, "OPTLINE_TWILIO_AUTH_TOKEN": fp.TWILIO_TOKEN,
           "OPTLINE_TWILIO_BASE_URL": fake.url, "OPTLINE_SEND_CONCURRENCY": "20", "OPTLINE_SEND_WINDOW_SECONDS": "1",
           "OPTLINE_WORKER_LEASE_SECONDS": "1", "OPTLINE_WORKER_POLL_SECONDS": "0.2",
           "OPTLINE_SECRET_KEY": "crash-test-secret-key-0123456789-abcdefgh", "OPTLINE_PUBLIC_URL": "https://acme.test"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "optline", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_a_worker_killed_mid_call_loses_and_repeats_nothing(
    live: Container, db_url: str, fake_server: fp.RemoteFake
) -> None:
    outbound.seed(live, COUNT, time_zone=outbound.zone_where(True), us_state=None)
    with live.db.transaction() as conn:
        campaign = campaigns.create(conn, live.clock, program="deals", name="crash", template="Hi, 20% off")
        campaigns.start(conn, live.clock, campaign, public_url=live.settings.public_url)
    fake_server.client.post("/_fake/latency", json={"seconds": 0.3}).raise_for_status()
    first = start_worker(db_url, fake_server)
    deadline = time.monotonic() + 60
    while len(fake_server.received) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # 20 calls in flight, results of the last ~100 ms not stored
    first.wait(10)
    with live.db.read() as conn:
        in_flight = conn.execute(select(messages.c.id).where(messages.c.status == "sending")).all()
    assert in_flight, "the kill should leave calls in flight"

    second = start_worker(db_url, fake_server)
    try:
        deadline = time.monotonic() + 120  # the dead worker's lease (29 s at least) expires first
        while time.monotonic() < deadline:
            with live.db.read() as conn:
                left = conn.execute(select(messages.c.id).where(messages.c.status != "sent").limit(1)).first()
            if left is None:
                break
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()[-2000:]
    received = fake_server.received
    per = Counter(m["to"] for m in received)
    assert [to for to, n in per.items() if n > 1] == []  # nothing sent twice
    with live.db.read() as conn:
        rows = conn.execute(
            select(contacts.c.phone, messages.c.status, messages.c.provider_message_id).join(
                contacts, contacts.c.id == messages.c.contact_id
            )
        ).all()
    assert len(rows) == COUNT and all(r.status == "sent" for r in rows)  # nothing lost
    by_phone = {m["to"]: m["sid"] for m in received}
    assert {r.phone: r.provider_message_id for r in rows} == by_phone  # the provider's own ids, reconciled
