"""Dispatch throughput: the full pipeline (claim, send-time consent check, composition, hand-over marks,
provider call, status writes) against the fake Twilio server running in another process, beside a bare
httpx loop posting the same requests to the same server: the ceiling. Target: ≥ 70% of the ceiling.
The dispatcher runs as ``optline worker`` configures it (one process, provider calls one after another,
outcomes recorded in the background while the next batch is sent).

    python -m bench.dispatch [--messages 5000] [--engines sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.support import fake_providers as fp
from tests.support import outbound

from optline.adapters.clock import SystemClock
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import build
from optline.config import Settings
from optline.services import campaigns
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]


def bare_loop(url: str, n: int) -> float:
    """The ceiling: one client, one request after another, nothing else."""
    endpoint = f"{url}/2010-04-01/Accounts/{fp.TWILIO_SID}/Messages.json"
    with httpx.Client(auth=(fp.TWILIO_SID, fp.TWILIO_TOKEN)) as client:
        t0 = time.perf_counter()
        for i in range(n):
            r = client.post(endpoint, data={"To": outbound.phone(i), "From": "+14155550100",
                                            "Body": f"Acme: Hi P{i}, 2 for 1 today Reply STOP to opt out."})  # fmt: skip
            assert r.status_code == 201
        return n / (time.perf_counter() - t0)


def pipeline(db_url: str, fake_url: str, n: int) -> float:
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    outbound.seed(c, n, time_zone=outbound.zone_where(True), us_state=None)
    with c.db.transaction() as conn:
        camp = campaigns.create(
            conn, c.clock, program="deals", name="bench", template="Hi {{ first_name }}, 2 for 1 today"
        )
        campaigns.start(conn, c.clock, camp)
    dispatcher = Dispatcher(c.db, c.clock, TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake_url),
                            DispatchConfig(batch_size=200, public_url="https://acme.test", pipeline=True), worker_id="bench")  # fmt: skip
    total = Counts()
    t0 = time.perf_counter()
    while True:
        counts = dispatcher.run_once()
        total.add(counts)
        if counts.claimed == 0:
            break
    dispatcher.close()
    rate = total.sent / (time.perf_counter() - t0)
    c.close()
    assert total.sent == n, total
    return rate


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_providers", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"


def main() -> None:
    parser = argparse.ArgumentParser(description="dispatch throughput benchmark")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args, _ = parser.parse_known_args()
    results = []
    for engine in args.engines.split(","):
        proc, url = start_fake()
        try:
            bare_loop(url, 300)  # warm-up
            ceiling = bare_loop(url, args.messages)
            if engine == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    rate = pipeline(f"sqlite:///{Path(tmp) / 'bench.db'}", url, args.messages)
            else:
                admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
                db = f"optline_bench_{uuid.uuid4().hex[:8]}"
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{db}"'))
                try:
                    rate = pipeline(
                        make_url(PG_URL).set(database=db).render_as_string(False), url, args.messages
                    )
                finally:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                    admin.dispose()
        finally:
            proc.terminate()
            proc.wait(10)
        line = (f"{engine:10s} dispatch {rate:,.0f} msgs/s vs bare httpx loop {ceiling:,.0f} msgs/s "
                f"= {rate / ceiling:.0%} of the ceiling (target >= 70%)")  # fmt: skip
        print(line)
        results.append(line)
    print("\n".join(["", "dispatch summary:", *results]))


if __name__ == "__main__":
    main()
