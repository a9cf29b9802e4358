"""A PostgreSQL restart under running optline processes: 2 workers dispatching a campaign and a running
``optline serve`` taking signed STOPs. The server is stopped (fast shutdown: every connection cut, every
open transaction rolled back), kept down for a few seconds, and started again — twice, once early in the
dispatch and once while STOPs are arriving.

Nobody restarts optline: the workers and the API must recover by themselves. A STOP that arrives while the
database is down must get a 5xx (so the provider retries it), and its retry must record it. Afterwards
nothing answered 2xx is missing, every recipient who did not opt out has the campaign exactly once (the
provider's log), and nobody has it twice — a call whose result could not be written during the outage is
reconciled with the provider, never resent blindly.

The cluster is private to this test (``tests/support/pg_cluster.py``): restarting the shared server would
break every other test running against it.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import contacts, subscriptions
from optline.bootstrap import build
from optline.config import Settings
from tests.support import fake_providers as fp
from tests.support import fleet, outbound
from tests.support.pg_cluster import Cluster, private_cluster
from tests.support.server import serve

TOTAL, STOPS, DOWN_SECONDS = 3_000, 120, 4.0
BODY = "Weekend offer"


@pytest.mark.slow
def test_workers_and_api_ride_out_a_postgres_restart(fake_server: fp.RemoteFake, tmp_path: Path) -> None:
    with private_cluster() as cluster:
        db_url = cluster.create_database("optline")
        c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
        try:
            outbound.seed(c, TOTAL, time_zone=outbound.zone_where(True), us_state=None)
            env = fleet.env_for(db_url, fake_server)
            fleet.optline(env, "campaigns", "create", "weekend", "-p", "deals", "-t", BODY + ": 20% off")
            fleet.optline(env, "campaigns", "send", "weekend", "-p", "deals", "--no-dispatch", "--no-wait")
            # A provider that takes a little while, so calls are in flight when the connections are cut.
            fake_server.client.post("/_fake/latency", json={"seconds": 0.02}).raise_for_status()
            stoppers = [outbound.phone(i) for i in range(TOTAL - 1, 0, -(TOTAL // STOPS))][:STOPS]
            results: list[fleet.StopSent] = []
            twilio = {k: v for k, v in env.items() if k.startswith("OPTLINE_TWILIO")}
            with serve(db_url, **twilio) as api, fleet.workers(env, 2, tmp_path) as procs:
                _wait_for_progress(fake_server, BODY, at_least=200)
                _outage(cluster)  # during dispatch
                pool = ThreadPoolExecutor(8)  # the provider posts replies concurrently
                stops = pool.map(
                    lambda i: fleet.send_stop(api.url, stoppers[i], f"SMout{i:030d}"), range(STOPS)
                )
                time.sleep(1.0)
                _outage(cluster)  # while STOPs arrive (and dispatch goes on)
                results.extend(stops)
                pool.shutdown()
                fleet.wait_settled(c, timeout=300)
                alive = [p.poll() is None for p in procs] + [api.process.poll() is None]
            with c.db.read() as conn:
                unsubscribed = set(
                    conn.execute(
                        select(contacts.c.phone)
                        .join(subscriptions, subscriptions.c.contact_id == contacts.c.id)
                        .where(subscriptions.c.status == "unsubscribed")
                    ).scalars()
                )
        finally:
            c.close()

    assert all(alive), "an optline process died instead of recovering"
    answered = [r for r in results if r.answered]
    assert len(answered) == STOPS, f"{STOPS - len(answered)} STOPs never got a 2xx"
    refused = [r for r in results if len(r.attempts) > 1]
    assert refused, "no STOP arrived during the outage: the test did not test it"
    assert all(a.startswith("5") or not a.isdigit() for r in refused for a in r.attempts[:-1]), (
        "an inbound STOP during the outage got something other than a 5xx or a refused connection"
    )
    assert {r.phone for r in answered} <= unsubscribed  # nothing answered 2xx is missing
    by_phone = fleet.arrivals(fake_server, BODY)
    counts = Counter({phone: len(got) for phone, got in by_phone.items()})
    assert max(counts.values()) == 1, f"sent twice: {[p for p, n in counts.items() if n > 1][:5]}"
    stopped = {r.phone for r in results}
    missing = [p for p in map(outbound.phone, range(TOTAL)) if p not in by_phone and p not in stopped]
    assert missing == [], f"{len(missing)} recipients never got the campaign: {missing[:5]}"
    print(
        f"\ndatabase outage: 2 restarts ({DOWN_SECONDS:.0f}s down each), {TOTAL} messages, {STOPS} STOPs, "
        f"{len(refused)} STOPs refused during the outage and recorded on retry, duplicates 0, lost 0"
    )


def _outage(cluster: Cluster) -> None:
    cluster.stop()
    time.sleep(DOWN_SECONDS)
    cluster.start()


def _wait_for_progress(fake: fp.RemoteFake, prefix: str, *, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in fleet.arrivals(fake, prefix).values()) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError("the workers sent nothing")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_started_while_postgres_is_down_waits_for_it(
    fake_server: fp.RemoteFake, tmp_path: Path
) -> None:
    """CI once started the second worker of the test above just as its first outage began: it printed
    "database error" and exited. A worker started during an outage waits for the database, then sends."""
    with private_cluster() as cluster:
        db_url = cluster.create_database("optline")
        c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
        try:
            outbound.seed(c, 20, time_zone=outbound.zone_where(True), us_state=None)
        finally:
            c.close()
        env = fleet.env_for(db_url, fake_server)
        fleet.optline(env, "campaigns", "create", "late", "-p", "deals", "-t", "Late start: 20% off")
        fleet.optline(env, "campaigns", "send", "late", "-p", "deals", "--no-dispatch", "--no-wait")
        cluster.stop()
        with fleet.workers(env, 1, tmp_path) as (proc,):
            log = tmp_path / "worker-0.log"
            deadline = time.monotonic() + 60
            while "waiting for the database" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            cluster.start()
            _wait_for_progress(fake_server, "Late start", at_least=20)
            assert proc.poll() is None, log.read_text()
        assert proc.returncode == 0, log.read_text()  # SIGTERM: a graceful exit
