"""Real optline processes for the reliability suites: a running ``optline serve``, N ``optline worker``
processes, and a provider-like client that delivers signed STOPs the way Twilio does (retrying until 2xx)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from optline.adapters.db.tables import messages
from optline.bootstrap import Container
from tests.support import fake_providers as fp

OPTLINE = str(Path(sys.executable).with_name("optline"))
SENDER = "+14155550100"  # tests/support/outbound.make_program's sender


def env_for(db_url: str, fake: fp.RemoteFake, **extra: str) -> dict[str, str]:
    """What an operator would export: Twilio pointed at the fake, short poll and backoff for the tests."""
    return {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_PROVIDER": "twilio",
            "OPTLINE_TWILIO_ACCOUNT_SID": fp.TWILIO_SID, "OPTLINE_TWILIO_AUTH_TOKEN": fp.TWILIO_TOKEN,
            "OPTLINE_TWILIO_BASE_URL": fake.url, "OPTLINE_WORKER_LEASE_SECONDS": "24",
            "OPTLINE_WORKER_POLL_SECONDS": "0.2", "OPTLINE_RETRY_BACKOFF_SECONDS": "0.2",
            "OPTLINE_PUBLIC_URL": "https://acme.test", "OPTLINE_ENV": "test", "COLUMNS": "160",
            **extra}  # fmt: skip


def optline(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OPTLINE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"optline {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


@contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for i in range(count):
        log = (log_dir / f"worker-{i}.log").open("w")
        procs.append(subprocess.Popen([OPTLINE, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class StopSent:
    phone: str
    first_sent: datetime  # when the first attempt left
    answered: datetime | None = None  # when a 2xx came back: the opt-out committed before this instant
    attempts: list[str] = field(default_factory=list)  # status code or error of each attempt


def send_stop(base_url: str, phone: str, sid: str, *, deadline: float = 120.0) -> StopSent:
    """One inbound STOP, signed with the twilio SDK and retried like Twilio retries: until a 2xx."""
    url = f"{base_url}/webhooks/twilio/sms"
    params = {"MessageSid": sid, "AccountSid": fp.TWILIO_SID, "From": phone, "To": SENDER, "Body": "STOP",
              "NumMedia": "0"}  # fmt: skip
    headers = {
        "X-Twilio-Signature": RequestValidator(fp.TWILIO_TOKEN).compute_signature(url, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    sent = StopSent(phone=phone, first_sent=datetime.now(UTC))
    give_up = time.monotonic() + deadline
    with httpx.Client(timeout=15) as client:
        while time.monotonic() < give_up:
            try:
                status = client.post(url, data=params, headers=headers).status_code
                sent.attempts.append(str(status))
                if 200 <= status < 300:
                    sent.answered = datetime.now(UTC)
                    return sent
            except httpx.HTTPError as exc:
                sent.attempts.append(type(exc).__name__)
            time.sleep(0.25)
    return sent


def arrivals(fake: fp.RemoteFake, campaign_text: str) -> dict[str, list[dict[str, Any]]]:
    """The fake provider's log of the campaign's messages (confirmations excluded), by recipient."""
    by_phone: dict[str, list[dict[str, Any]]] = {}
    for m in fake.received:
        if campaign_text in m["body"]:
            by_phone.setdefault(m["to"], []).append(m)
    return by_phone


OPEN = ("queued", "claimed", "sending")


def open_messages(c: Container) -> int:
    with c.db.read() as conn:  # a fresh transaction per look: one snapshot would never see rows change
        query = select(func.count()).select_from(messages).where(messages.c.status.in_(OPEN))
        return int(conn.execute(query).scalar_one())


def wait_settled(c: Container, *, timeout: float) -> None:
    """Until no message is waiting or in flight (each one sent, suppressed, failed …)."""
    deadline = time.monotonic() + timeout
    while (left := open_messages(c)) > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{left} messages still open after {timeout:.0f}s")
        time.sleep(0.5)
