"""No send after an opt-out, under real concurrency: a 20,000-message campaign dispatched by 4 ``optline
worker`` processes to the fake Twilio in a process of its own, while 2,000 recipients text STOP through the
signed webhook of a running ``optline serve``.

What is checked, per recipient, from the provider's own log and the ledger:
- nobody is handed a campaign message whose hand-over began after their opt-out committed (a STOP's commit
  happens before its 2xx, so ``handed_over_at`` must precede the moment the 2xx came back);
- everybody who did not opt out before their turn receives the campaign exactly once;
- every STOP answered 2xx is an opt-out in the subscription projection.

PostgreSQL only: the concurrency of several worker processes is what this suite is about, and SQLite has one
writer (the per-engine suites cover SQLite).
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from optline.adapters.clock import SystemClock, as_utc
from optline.adapters.db.tables import messages, subscriptions
from optline.bootstrap import build
from optline.config import Settings
from tests.support import databases, fleet, outbound
from tests.support import fake_providers as fp
from tests.support.server import serve

TOTAL, STOPS, WORKERS = 20_000, 2_000, 4
BODY = "Spring sale"


@pytest.mark.slow
def test_no_recipient_is_texted_after_their_opt_out_committed(
    fake_server: fp.RemoteFake, tmp_path: Path
) -> None:
    pg = databases.postgres()
    db_url = pg.fresh()
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
    try:
        outbound.seed(c, TOTAL, time_zone=outbound.zone_where(True), us_state=None)
        env = fleet.env_for(db_url, fake_server)
        fleet.optline(env, "campaigns", "create", "spring", "-p", "deals", "-t", BODY + ": 2 for 1 today")
        fleet.optline(env, "campaigns", "send", "spring", "-p", "deals", "--no-dispatch", "--no-wait")
        # Every tenth recipient texts STOP, in the order the queue is worked, so the STOPs race the workers.
        stoppers = [outbound.phone(i) for i in range(0, TOTAL, TOTAL // STOPS)]
        results: list[fleet.StopSent] = []
        lock = threading.Lock()
        with serve(db_url, **{k: v for k, v in env.items() if k.startswith("OPTLINE_TWILIO")}) as api:

            def stop(i: int, phone: str) -> None:
                sent = fleet.send_stop(api.url, phone, f"SMstop{i:030d}")
                with lock:
                    results.append(sent)

            with fleet.workers(env, WORKERS, tmp_path), ThreadPoolExecutor(8) as pool:
                list(pool.map(stop, range(len(stoppers)), stoppers))
                fleet.wait_settled(c, timeout=600)
        by_phone = fleet.arrivals(fake_server, BODY)
        with c.db.read() as conn:
            rows = {
                r.to_phone: r
                for r in conn.execute(
                    select(messages.c.to_phone, messages.c.status, messages.c.handed_over_at).where(
                        messages.c.campaign_id.is_not(None)
                    )
                )
            }
            unsubscribed = int(
                conn.execute(
                    select(func.count())
                    .select_from(subscriptions)
                    .where(subscriptions.c.status == "unsubscribed")
                ).scalar_one()
            )
    finally:
        c.close()
        pg.drop(db_url)

    assert len(results) == STOPS and all(r.answered for r in results), "a STOP never got a 2xx"
    assert unsubscribed == STOPS  # every 2xx is an opt-out in the projection
    late, texted_before = [], 0
    for r in results:
        row = rows[r.phone]
        if r.phone in by_phone:
            texted_before += 1
            assert r.answered is not None and row.handed_over_at is not None
            if as_utc(row.handed_over_at) >= r.answered:
                late.append(r.phone)
        else:
            assert row.status == "suppressed", (r.phone, row.status)
    assert late == [], f"{len(late)} recipients texted after their opt-out committed: {late[:5]}"
    stopped = {r.phone for r in results}
    counts = Counter({phone: len(got) for phone, got in by_phone.items()})
    assert max(counts.values()) == 1, f"duplicates: {[p for p, n in counts.items() if n > 1][:5]}"
    missing = [
        outbound.phone(i)
        for i in range(TOTAL)
        if outbound.phone(i) not in stopped and outbound.phone(i) not in by_phone
    ]
    assert missing == [], f"{len(missing)} recipients who never opted out got nothing: {missing[:5]}"
    # The figures the README's Guarantees section quotes.
    print(
        f"\nno-send-after-opt-out: {TOTAL} messages, {WORKERS} workers, {STOPS} STOPs "
        f"({texted_before} texted before their STOP, {STOPS - texted_before} suppressed), "
        f"late sends {len(late)}, duplicates 0, retried STOPs "
        f"{sum(len(r.attempts) > 1 for r in results)}"
    )
