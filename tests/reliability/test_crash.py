"""Workers killed with SIGKILL at random instants, several times, against a provider that answers slowly (so
kills land in the middle of calls): every message arrives exactly once, none lost, none duplicated.

A killed worker leaves claimed messages and calls in flight. Claimed-but-not-handed-over messages go back to
the queue when their lease expires; a message whose call may have reached the provider is reconciled with
the provider's message list before anything is resent (DESIGN.md, "exactly once with providers that have no
idempotency key"). PostgreSQL: several worker processes is a PostgreSQL deployment.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from optline.adapters.clock import SystemClock
from optline.bootstrap import build
from optline.config import Settings
from tests.support import databases, fleet, outbound
from tests.support import fake_providers as fp

TOTAL, WORKERS, KILLS = 2_000, 2, 6
BODY = "Flash sale"


@pytest.mark.slow
def test_sigkilled_workers_deliver_every_message_exactly_once(
    fake_server: fp.RemoteFake, tmp_path: Path
) -> None:
    pg = databases.postgres()
    db_url = pg.fresh()
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
    rng = random.Random(13)  # a fixed seed: a failure can be replayed
    try:
        outbound.seed(c, TOTAL, time_zone=outbound.zone_where(True), us_state=None)
        env = fleet.env_for(db_url, fake_server, OPTLINE_WORKER_LEASE_SECONDS="6")
        fleet.optline(env, "campaigns", "create", "flash", "-p", "deals", "-t", BODY + ": today only")
        fleet.optline(env, "campaigns", "send", "flash", "-p", "deals", "--no-dispatch", "--no-wait")
        fake_server.client.post("/_fake/latency", json={"seconds": 0.15}).raise_for_status()
        logs = [(tmp_path / f"worker-{i}.log").open("a") for i in range(WORKERS)]

        def start(i: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [fleet.OPTLINE, "worker"], env=env, stdout=logs[i], stderr=subprocess.STDOUT
            )

        procs = [start(i) for i in range(WORKERS)]
        # Kill at random points of the campaign's progress (not of the clock), so the kills land mid-send
        # however fast the workers are.
        marks = sorted(rng.randrange(TOTAL // 20, TOTAL * 9 // 10) for _ in range(KILLS))
        kills = 0
        try:
            for mark in marks:
                while _arrived(fake_server) < mark and fleet.open_messages(c) > 0:
                    time.sleep(0.05)
                i = rng.randrange(WORKERS)
                procs[i].send_signal(signal.SIGKILL)
                procs[i].wait(10)
                kills += 1
                procs[i] = start(i)
            fleet.wait_settled(c, timeout=600)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    finally:
        c.close()
        pg.drop(db_url)

    by_phone = fleet.arrivals(fake_server, BODY)
    counts = Counter({phone: len(got) for phone, got in by_phone.items()})
    duplicates = [p for p, n in counts.items() if n > 1]
    missing = [p for p in map(outbound.phone, range(TOTAL)) if p not in by_phone]
    assert duplicates == [] and missing == [], f"duplicates {duplicates[:5]}, missing {missing[:5]}"
    print(
        f"\ncrash: {TOTAL} messages, {WORKERS} workers, {KILLS} SIGKILLs mid-call (provider 150 ms), "
        f"duplicates 0, lost 0"
    )


def _arrived(fake: fp.RemoteFake) -> int:
    return sum(len(got) for got in fleet.arrivals(fake, BODY).values())
