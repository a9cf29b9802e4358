"""Dispatch throughput: the full pipeline (claim, send-time consent check, composition, hand-over marks,
provider call, status writes) against the fake Twilio server running in another process, beside a bare
httpx loop posting the same requests to the same server: the ceiling. Target: >= 70% of the ceiling.
The dispatcher runs as ``optline worker`` configures it: provider calls one after another in its courier
process, while the worker process checks the next batch and records the last one (``--no-courier``: the
calls in the worker process, overlapped with threads). The courier is started before the clock starts: a
worker starts it once, not per message.

Shared machines are noisy (the ceiling itself moves by +-30% from minute to minute), so the two are
interleaved: ceiling, dispatch, ceiling, dispatch, …, ceiling; each dispatch round is compared with the mean
of the ceilings measured just before and just after it, and the median round is reported.

    python -m bench.dispatch [--messages 2000] [--rounds 5] [--batch-size N] [--engines sqlite,postgresql]
                             [--no-courier]
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.support import fake_providers as fp
from tests.support import outbound

from bench.common import fresh_database
from optline.adapters.clock import SystemClock
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import campaigns
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher

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


def prepare(db_url: str, n: int) -> Container:
    """``n`` subscribed contacts (all inside their sending hours) and a started campaign to all of them."""
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    outbound.seed(c, n, time_zone=outbound.zone_where(True), us_state=None)
    with c.db.transaction() as conn:
        camp = campaigns.create(
            conn, c.clock, program="deals", name="bench", template="Hi {{ first_name }}, 2 for 1 today"
        )
        campaigns.start(conn, c.clock, camp)
    return c


def dispatch_round(c: Container, fake_url: str, n: int, batch_size: int, courier: bool = True) -> float:
    """Send at least ``n`` of the campaign's messages the way a worker does; messages/s."""
    factory = functools.partial(TwilioSender, fp.TWILIO_SID, fp.TWILIO_TOKEN, fake_url) if courier else None
    config = DispatchConfig(
        batch_size=batch_size, public_url="https://acme.test", pipeline=True, courier=factory
    )
    sender = TwilioSender(fp.TWILIO_SID, fp.TWILIO_TOKEN, fake_url)
    dispatcher = Dispatcher(c.db, c.clock, sender, config, worker_id="bench")
    dispatcher.start()
    total = Counts()
    t0 = time.perf_counter()
    while total.sent < n:
        counts = dispatcher.run_once()
        total.add(counts)
        assert counts.claimed, total
    total.add(dispatcher.close())
    rate = total.sent / (time.perf_counter() - t0)
    assert total.suppressed == total.failed == total.deferred == 0, total
    return rate


def start_fake() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "tests.support.fake_providers", "--port", "0", "--latency", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline().split()[1])}"


def main() -> None:
    parser = argparse.ArgumentParser(description="dispatch throughput benchmark")
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--batch-size", type=int, default=Settings().worker_batch_size,
                        help="messages per claim (default: the worker's, OPTLINE_WORKER_BATCH_SIZE)")  # fmt: skip
    parser.add_argument("--no-courier", action="store_true", help="provider calls in the worker process")
    args, _ = parser.parse_known_args()
    results = []
    for engine in args.engines.split(","):
        proc, url = start_fake()
        try:
            with fresh_database(engine) as db_url:
                # per round: the counts lag one batch (recorded in the background), plus the batch prefetched last
                c = prepare(db_url, (args.messages + 3 * args.batch_size) * args.rounds)
                bare_loop(url, 300)  # warm-up
                ceilings = [bare_loop(url, args.messages)]
                rounds = []
                for _ in range(args.rounds):
                    rate = dispatch_round(c, url, args.messages, args.batch_size, courier=not args.no_courier)
                    ceilings.append(bare_loop(url, args.messages))
                    ceiling = (ceilings[-2] + ceilings[-1]) / 2
                    rounds.append((rate / ceiling, rate, ceiling))
                    print(f"  {engine:10s} round: dispatch {rate:,.0f} msgs/s, ceiling {ceiling:,.0f} msgs/s "
                          f"= {rate / ceiling:.0%}")  # fmt: skip
                c.close()
        finally:
            proc.terminate()
            proc.wait(10)
        ratio, rate, ceiling = sorted(rounds)[len(rounds) // 2]
        line = (f"{engine:10s} dispatch {rate:,.0f} msgs/s vs bare httpx loop {ceiling:,.0f} msgs/s "
                f"= {ratio:.0%} of the ceiling (median of {len(rounds)} rounds; target >= 70%)")  # fmt: skip
        print(line)
        results.append(line)
    print("\n".join(["", "dispatch summary:", *results]))


if __name__ == "__main__":
    main()
