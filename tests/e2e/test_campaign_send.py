"""``optline campaigns send`` and ``optline worker`` as subprocesses against the fake Twilio server in its own
process: a 100k audience with people opting out while it runs and quiet-hour recipients, and a worker
killed with SIGKILL mid-send that a restarted worker finishes with no duplicates and nothing lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from optline.adapters.clock import SystemClock, as_utc
from optline.adapters.db.tables import messages
from optline.bootstrap import Container, build
from optline.config import Settings
from tests.support import fake_providers as fp
from tests.support import outbound

OPTLINE = str(Path(sys.executable).with_name("optline"))


def cli_env(db_url: str, fake: fp.RemoteFake) -> dict[str, str]:
    return {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_PROVIDER": "twilio",
            "OPTLINE_TWILIO_ACCOUNT_SID": fp.TWILIO_SID, "OPTLINE_TWILIO_AUTH_TOKEN": fp.TWILIO_TOKEN,
            "OPTLINE_TWILIO_BASE_URL": fake.url, "OPTLINE_WORKER_LEASE_SECONDS": "24",
            "OPTLINE_WORKER_POLL_SECONDS": "0.2", "OPTLINE_RETRY_BACKOFF_SECONDS": "0.2",
            "OPTLINE_PUBLIC_URL": "https://acme.test", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1",
            "COLUMNS": "160"}  # fmt: skip


def optline(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPTLINE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def system_container(db_url: str) -> Container:
    return build(Settings(env="test", database_url=db_url), clock=SystemClock())


@pytest.mark.slow
def test_send_100k_with_opt_outs_while_running_and_quiet_hours(
    tmp_path: Path, fake_server: fp.RemoteFake
) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    day, night = outbound.zone_where(True), outbound.zone_where(False)
    total, quiet = 100_000, 500
    program, ids = outbound.seed(
        c, total, batch=25_000, time_zone=lambda i: night if i % 200 == 7 else day, us_state=None
    )
    # Opted out after the audience is queued, before their turn: not the first messages in the queue (a
    # worker at the provider's speed hands the first batch over within milliseconds of the first rows).
    before = ids[5003::5000]
    env = cli_env(db_url, fake_server)
    created = optline(
        env, "campaigns", "create", "big", "-p", "deals", "-t", "Hi {{ first_name }}: 2 for 1 today"
    )
    assert created.returncode == 0, created.stderr
    while_running = [ids[i] for i in range(11, total, 997) if i % 200 != 7]  # not the quiet-hour group
    committed: dict[int, datetime] = {}
    proc = subprocess.Popen(
        [OPTLINE, "campaigns", "send", "big", "-p", "deals"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def opt_outs() -> None:
        def queued() -> int:  # a fresh transaction per look: one snapshot would never see the rows arrive
            with c.db.read() as conn:
                return int(conn.execute(select(func.count()).select_from(messages)).scalar() or 0)

        wait_for(queued, timeout=300)
        with c.db.transaction() as conn:
            for cid in before:
                outbound.opt_out(conn, c.clock, program, cid)
        before_committed = datetime.now(UTC)
        for cid in before:
            committed[cid] = before_committed
        for cid in while_running:
            with c.db.transaction() as conn:
                outbound.opt_out(conn, c.clock, program, cid)
            committed[cid] = datetime.now(UTC)
            time.sleep(0.05)

    # The audience is queued first; "before" opt-outs land right after it, ahead of most sending.
    thread = threading.Thread(target=opt_outs)
    thread.start()
    out, err = proc.communicate(timeout=900)
    thread.join()
    assert proc.returncode == 0, err
    assert "suppressed" in out and "deferred" in out and "━" in out  # the live bar was drawn

    received = fake_server.received
    to_counts = Counter(m["to"] for m in received)
    assert max(to_counts.values()) == 1, "someone got the campaign twice"
    with c.db.read() as conn:
        rows = {
            r.contact_id: r
            for r in conn.execute(
                select(
                    messages.c.contact_id, messages.c.status, messages.c.handed_over_at, messages.c.to_phone
                )
            )
        }
    statuses = Counter(r.status for r in rows.values())
    assert statuses["deferred"] == quiet and statuses["sent"] == len(received)
    assert statuses["sent"] + statuses["suppressed"] + statuses["deferred"] == total
    for cid in before:
        assert rows[cid].status == "suppressed" and rows[cid].to_phone not in to_counts
    for cid, at in committed.items():
        r = rows[cid]
        if r.status == "sent":
            assert as_utc(r.handed_over_at) < at, f"contact {cid} texted after the opt-out committed"
    assert any(rows[cid].status == "suppressed" for cid in committed)
    assert all(rows[cid].status == "deferred" for cid in ids[7::200])
    assert all(
        m["body"].startswith("Acme: Hi P")
        and re.search(r"\. Reply STOP to opt out or tap https://acme\.test/u/\w{10}$", m["body"])
        for m in received[:50]
    )
    c.close()


def wait_for(predicate: Any, timeout: float = 120, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def test_worker_killed_with_sigkill_restarts_without_duplicates_or_losses(
    db_url: str, fake_server: fp.RemoteFake, tmp_path: Path
) -> None:
    total = 3000
    c = system_container(db_url)
    outbound.seed(c, total, time_zone=outbound.zone_where(True), us_state=None)
    env = cli_env(db_url, fake_server)
    assert (
        optline(env, "campaigns", "create", "k", "-p", "deals", "-t", "Hi {{ first_name }}").returncode == 0
    )
    queued = optline(env, "campaigns", "send", "k", "-p", "deals", "--no-dispatch", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    # One message is accepted by the provider but its answer never comes back before the kill.
    stuck = outbound.phone(1500)
    fake_server.fail(to=stuck, accept=True, delay=60)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([OPTLINE, "worker"], env=env, stdout=log, stderr=log)
    wait_for(lambda: any(m["to"] == stuck for m in fake_server.received), timeout=120)
    time.sleep(0.3)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = len(fake_server.received)
    assert 0 < killed_at < total

    restarted = subprocess.Popen([OPTLINE, "worker"], env=env, stdout=log, stderr=log)
    try:

        def finished() -> bool:
            with c.db.read() as conn:
                left = conn.execute(
                    select(func.count()).select_from(messages).where(messages.c.status != "sent")
                ).scalar()
            return left == 0

        wait_for(finished, timeout=180, every=0.5)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    received = fake_server.received
    to_counts = Counter(m["to"] for m in received)
    assert len(received) == total and max(to_counts.values()) == 1
    assert set(to_counts) == {outbound.phone(i) for i in range(total)}
    with c.db.read() as conn:
        stuck_row = conn.execute(select(messages).where(messages.c.to_phone == stuck)).one()
    sid = next(m["sid"] for m in received if m["to"] == stuck)
    assert stuck_row.provider_message_id == sid  # reconciled with the provider, not resent
    c.close()
