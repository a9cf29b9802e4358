"""Dispatch at the provider's speed (issue 18), against bench/fake_twilio.py (aiohttp, Twilio's Messages API)
answering in ``--latency`` seconds (default 0.15 s; real providers answer in 100–300 ms).

Lines, each beside its baseline measured in the same run (interleaved rounds, median and range):
1. **Ceiling vs one worker**: an asyncio loop with aiohttp and 100 requests in flight (the ceiling), and
   in the same rounds 100 threads on one httpx.Client and httpx's async client with 100 in flight (the
   clients the execution model was chosen against: the worker's calls run on aiohttp), and one worker (``Dispatcher`` configured as ``optline worker`` does: K=100
   calls in flight, claim → check → hand-over → record). Target: the worker >= 80% of the ceiling.
2. **Zero latency**: the same worker against a fake answering at once: messages/s and the worker's CPU
   milliseconds per message (its own process time), beside the aiohttp loop at zero latency.
3. **4 workers on PostgreSQL, sender capped at 50 msg/s** by the fake (429 + Retry-After beyond it): four
   real ``optline worker`` processes sharing the sender's rate limit (``OPTLINE_SEND_RATE_PER_SECOND=50``,
   in the database): aggregate accepted rate vs the cap (target: within 10%, never above), 429s counted.
4. **STOP confirmation latency** while a campaign is sending: STOPs recorded through the inbound service
   during the send; time from the STOP's commit to the fake accepting its confirmation (p50/p99; target p99
   < 5 s), during a 20,000-message campaign as the issue asks (``--stop-campaign`` to change it).
Every round checks the fake's log: exactly one accepted request per campaign recipient, none after that
recipient's opt-out committed.

    python -m bench.dispatch [--messages 3000] [--rounds 3] [--engines sqlite,postgresql] [--latency 0.15]
                             [--skip-workers] [--skip-stop] [--stop-campaign 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import select
from tests.support import outbound

from bench.common import fresh_database
from bench.fake_twilio import SID, TOKEN
from optline.adapters.clock import SystemClock, as_utc
from optline.adapters.db.tables import contacts, messages
from optline.adapters.providers.base import InboundSms
from optline.adapters.providers.twilio.send import TwilioSender
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import campaigns, inbound
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher

ROOT = Path(__file__).resolve().parents[1]
SENDER = "+14155550100"
IN_FLIGHT = 100
# The capped run configures the sender's rate this much under the provider's cap, as an operator would:
# calls begin on their slots, but arrive with the machine's scheduling jitter (and across machines, their
# clocks' skew); at exactly the cap, a call arriving a few ms early is a 429 and a second's pause.
RATE_MARGIN = 0.95


class Fake:
    def __init__(self, latency: float, cap: int = 0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fake_twilio",
                "--port",
                "0",
                "--latency",
                str(latency),
                "--cap",
                str(cap),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}"
        self.endpoint = f"{self.url}/2010-04-01/Accounts/{SID}/Messages.json"

    def reset(self, **query: Any) -> None:
        httpx.post(f"{self.url}/_reset", params={k: str(v) for k, v in query.items()})

    def log(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_log", timeout=60).json())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def form(i: int) -> dict[str, str]:
    return {
        "To": outbound.phone(i),
        "From": SENDER,
        "Body": f"Acme: Hi P{i}, 2 for 1 today Reply STOP to opt out.",
    }


def aiohttp_loop(endpoint: str, n: int) -> float:
    """The ceiling: asyncio + aiohttp, IN_FLIGHT requests at once, nothing else."""

    async def go() -> float:
        headers = (
            {"Authorization": aiohttp.encode_basic_auth(SID, TOKEN)}
            if hasattr(aiohttp, "encode_basic_auth")
            else {}
        )
        auth = None if headers else aiohttp.BasicAuth(SID, TOKEN)
        sem = asyncio.Semaphore(IN_FLIGHT)
        async with aiohttp.ClientSession(
            auth=auth, headers=headers, connector=aiohttp.TCPConnector(limit=IN_FLIGHT)
        ) as session:

            async def one(i: int) -> None:
                async with sem, session.post(endpoint, data=form(i)) as r:
                    assert r.status == 201, r.status
                    await r.json()

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - t0)

    return asyncio.run(go())


def httpx_async_loop(endpoint: str, n: int) -> float:
    async def go() -> float:
        sem = asyncio.Semaphore(IN_FLIGHT)
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        async with httpx.AsyncClient(auth=(SID, TOKEN), limits=limits) as client:

            async def one(i: int) -> None:
                async with sem:
                    r = await client.post(endpoint, data=form(i))
                    assert r.status_code == 201

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - t0)

    return asyncio.run(go())


def threads_loop(endpoint: str, n: int) -> float:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    with httpx.Client(auth=(SID, TOKEN), limits=limits) as client, ThreadPoolExecutor(IN_FLIGHT) as pool:

        def one(i: int) -> None:
            assert client.post(endpoint, data=form(i)).status_code == 201

        t0 = time.perf_counter()
        list(pool.map(one, range(n)))
        return n / (time.perf_counter() - t0)


def prepare(db_url: str, n: int) -> Container:
    """``n`` subscribed contacts (inside their sending hours) and a started campaign to all of them."""
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    outbound.seed(c, n, time_zone=outbound.zone_where(True), us_state=None)
    with c.db.transaction() as conn:
        camp = campaigns.create(
            conn, c.clock, program="deals", name="bench", template="Hi {{ first_name }}, 2 for 1 today"
        )
        campaigns.start(conn, c.clock, camp, public_url=c.settings.public_url)
    return c


def worker_round(c: Container, fake: Fake, n: int) -> tuple[float, float]:
    """Send at least ``n`` campaign messages as one worker does; (messages/s, CPU ms per message)."""
    sender = TwilioSender(SID, TOKEN, fake.url)
    config = DispatchConfig(public_url="https://acme.test", concurrency=IN_FLIGHT, batch_size=500)
    dispatcher = Dispatcher(c.db, c.clock, sender, config, worker_id="bench")
    dispatcher.start()
    total = Counts()
    t0, cpu0 = time.perf_counter(), time.process_time()
    while total.sent < n:
        counts = dispatcher.run_once()
        total.add(counts)
        assert counts.claimed or total.sent >= n or dispatcher.in_flight, total
    total.add(dispatcher.close())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert total.suppressed == total.failed == total.deferred == 0, total
    return total.sent / elapsed, cpu / total.sent * 1000


def check_log(c: Container, log: list[dict[str, Any]], opted_out: dict[str, float] | None = None) -> str:
    """Exactly one accepted campaign message per recipient, none after the recipient's opt-out."""
    campaign_msgs = [m for m in log if "2 for 1" in m["body"]]
    per = Counter(m["to"] for m in campaign_msgs)
    dupes = [to for to, k in per.items() if k > 1]
    assert not dupes, f"duplicates at the fake: {dupes[:5]}"
    with c.db.read() as conn:
        sent = {
            r.phone
            for r in conn.execute(
                select(contacts.c.phone)
                .join(messages, messages.c.contact_id == contacts.c.id)
                .where(messages.c.status == "sent", messages.c.campaign_id.is_not(None))
            )
        }
    assert set(per) == sent, f"fake accepted {len(per)}, database says sent {len(sent)}"
    if not opted_out:
        return f"log ok: {len(per)} recipients, each accepted once"
    # Invariant 2: a message may reach the provider after an opt-out only if its send-time check came
    # before the opt-out committed (the call was already on its way). The check's time is handed_over_at.
    with c.db.read() as conn:
        checked = {
            r.phone: as_utc(r.handed_over_at).timestamp()
            for r in conn.execute(
                select(contacts.c.phone, messages.c.handed_over_at)
                .join(messages, messages.c.contact_id == contacts.c.id)
                .where(
                    contacts.c.phone.in_(list(opted_out)),
                    messages.c.campaign_id.is_not(None),
                    messages.c.handed_over_at.is_not(None),
                )
            )
        }
    sent_after = [
        m["to"] for m in campaign_msgs if m["to"] in opted_out and m["arrived"] > opted_out[m["to"]]
    ]
    late = [to for to in sent_after if checked[to] >= opted_out[to]]
    assert not late, f"checked after the opt-out committed, and texted: {late[:5]}"
    return (
        f"log ok: {len(per)} recipients, each accepted once; of {len(opted_out)} who opted out, none checked after "
        f"their opt-out was texted ({len(sent_after)} calls were already checked and on their way)"
    )


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} (range {min(values):,.0f}–{max(values):,.0f})"


def line_ceiling(engine: str, args: argparse.Namespace) -> str:
    fake = Fake(args.latency)
    try:
        with fresh_database(engine) as db_url:
            c = prepare(db_url, (args.messages + 1000) * args.rounds)
            aiohttp_loop(fake.endpoint, 300)  # warm-up
            ratios, workers, ceilings, threads, async_httpx = [], [], [], [], []
            for _ in range(args.rounds):
                before = aiohttp_loop(fake.endpoint, args.messages)
                rate, _cpu = worker_round(c, fake, args.messages)
                after = aiohttp_loop(fake.endpoint, args.messages)
                threads.append(threads_loop(fake.endpoint, args.messages))
                async_httpx.append(httpx_async_loop(fake.endpoint, min(args.messages, 1000)))
                ceiling = (before + after) / 2
                ceilings.append(ceiling)
                workers.append(rate)
                ratios.append(rate / ceiling)
                print(
                    f"  {engine}: worker {rate:,.0f}/s, aiohttp ceiling {ceiling:,.0f}/s = {rate / ceiling:.0%}; "
                    f"threads+httpx {threads[-1]:,.0f}/s, httpx async {async_httpx[-1]:,.0f}/s",
                    flush=True,
                )
            fake.reset()
            c.close()
    finally:
        fake.close()
    return (
        f"{engine:10s} one worker (K={IN_FLIGHT}) {spread(workers)} msgs/s vs aiohttp ceiling {spread(ceilings)} msgs/s "
        f"= {statistics.median(ratios):.0%} (range {min(ratios):.0%}–{max(ratios):.0%}; target >= 80%); same rounds: "
        f"100 threads+httpx {spread(threads)}, httpx async {spread(async_httpx)} msgs/s; fake latency {args.latency * 1000:.0f} ms"
    )


def line_zero_latency(engine: str, args: argparse.Namespace) -> str:
    fake = Fake(0.0)
    try:
        with fresh_database(engine) as db_url:
            c = prepare(db_url, (args.messages + 1000) * args.rounds)
            aiohttp_loop(fake.endpoint, 300)
            rates, cpus, ceilings = [], [], []
            for _ in range(args.rounds):
                ceilings.append(aiohttp_loop(fake.endpoint, args.messages))
                rate, cpu = worker_round(c, fake, args.messages)
                rates.append(rate)
                cpus.append(cpu)
            c.close()
    finally:
        fake.close()
    return (
        f"{engine:10s} zero latency: worker {spread(rates)} msgs/s, {statistics.median(cpus):.2f} CPU ms/message "
        f"(worker process) vs aiohttp loop {spread(ceilings)} msgs/s = {statistics.median(rates) / statistics.median(ceilings):.0%}"
    )


def line_four_workers(args: argparse.Namespace) -> str:
    cap = 50
    fake = Fake(args.latency, cap=cap)
    n = args.capped_messages
    try:
        with fresh_database("postgresql") as db_url:
            c = prepare(db_url, n)
            env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_ENV": "development", "OPTLINE_PROVIDER": "twilio",
                   "OPTLINE_TWILIO_ACCOUNT_SID": SID, "OPTLINE_TWILIO_AUTH_TOKEN": TOKEN, "OPTLINE_TWILIO_BASE_URL": fake.url,
                   "OPTLINE_SEND_RATE_PER_SECOND": str(cap * RATE_MARGIN), "OPTLINE_WORKER_POLL_SECONDS": "0.1",
                   "OPTLINE_SECRET_KEY": "bench-secret-key-0123456789-abcdefghij", "OPTLINE_PUBLIC_URL": "https://acme.test"}  # fmt: skip
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "optline", "worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(4)
            ]
            try:
                deadline = time.monotonic() + n / cap * 3 + 120
                while time.monotonic() < deadline:
                    with c.db.read() as conn:
                        left = conn.execute(
                            select(messages.c.id).where(messages.c.status != "sent").limit(1)
                        ).first()
                    if left is None:
                        break
                    time.sleep(0.5)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(60)
            log = fake.log()
            verdict = check_log(c, log["accepted"])
            times = sorted(m["at"] for m in log["accepted"])
            # Steady state: leave out the first and last second (workers starting, the tail).
            core = [t for t in times if times[0] + 1 <= t <= times[-1] - 1]
            rate = (len(core) - 1) / (core[-1] - core[0]) if len(core) > 1 else 0.0
            peak = max(sum(1 for u in times[i : i + 2 * cap] if u < t + 1) for i, t in enumerate(times))
            c.close()
    finally:
        fake.close()
    return (
        f"postgresql 4 workers, sender capped at {cap}/s by the fake (configured {cap * RATE_MARGIN:g}/s): aggregate {rate:,.1f} msgs/s = {rate / cap:.0%} of the cap "
        f"(target 90–100%), peak {peak} accepted in any 1 s, {log['throttled']} answered 429; {len(times)} messages; {verdict}"
    )


def line_stop_latency(engine: str, args: argparse.Namespace) -> str:
    fake = Fake(args.latency)
    n = args.stop_campaign
    try:
        with fresh_database(engine) as db_url:
            c = prepare(db_url, n)
            sender = TwilioSender(SID, TOKEN, fake.url)
            dispatcher = Dispatcher(
                c.db,
                c.clock,
                sender,
                DispatchConfig(public_url="https://acme.test", concurrency=IN_FLIGHT),
                worker_id="bench",
            )
            committed: dict[str, float] = {}
            done = threading.Event()

            def stops() -> None:
                i = n - 1  # from the end of the queue: recipients not texted yet
                while not done.is_set() and i > 0:
                    to = outbound.phone(i)
                    with c.db.transaction() as conn:
                        inbound.record_inbound(
                            conn,
                            c.clock,
                            InboundSms(
                                "twilio", f"SMstop{i}", to, SENDER, "STOP", received_at=datetime.now(UTC)
                            ),
                        )
                    committed[to] = time.time()
                    i -= max(1, n // 60)
                    time.sleep(0.25)

            thread = threading.Thread(target=stops)
            thread.start()
            total = Counts()
            while True:
                counts = dispatcher.run_once()
                total.add(counts)
                if not counts.claimed and not dispatcher.in_flight:
                    break
            done.set()
            thread.join()
            while (counts := dispatcher.run_once()).claimed or dispatcher.in_flight:  # a STOP's last reply
                total.add(counts)
            total.add(dispatcher.close())
            log = fake.log()["accepted"]
            verdict = check_log(c, log, committed)
            confirmed = {m["to"]: m["at"] for m in log if "2 for 1" not in m["body"] and m["to"] in committed}
            waits = sorted(confirmed[to] - at for to, at in committed.items() if to in confirmed)
            c.close()
    finally:
        fake.close()
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else float("nan")
    return (
        f"{engine:10s} STOP → confirmation accepted, during a {n:,}-message campaign: {len(waits)}/{len(committed)} confirmed, "
        f"p50 {statistics.median(waits) * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms (target p99 < 5 s); {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="dispatch at the provider's speed")
    parser.add_argument("--messages", type=int, default=3000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--latency", type=float, default=0.15, help="the fake's answer time (seconds)")
    parser.add_argument(
        "--capped-messages", type=int, default=1500, help="messages for the 4-worker capped run"
    )
    parser.add_argument("--stop-campaign", type=int, default=20000, help="campaign size during the STOP run")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-stop", action="store_true")
    parser.add_argument("--only-capped", action="store_true", help="only the 4-worker capped line")
    args, _ = parser.parse_known_args()
    lines = []
    for engine in [] if args.only_capped else args.engines.split(","):
        lines.append(line_ceiling(engine, args))
        print(lines[-1], flush=True)
        lines.append(line_zero_latency(engine, args))
        print(lines[-1], flush=True)
        if not args.skip_stop:
            lines.append(line_stop_latency(engine, args))
            print(lines[-1], flush=True)
    if not args.skip_workers and "postgresql" in args.engines:
        lines.append(line_four_workers(args))
        print(lines[-1], flush=True)
    print("\n".join(["", "dispatch summary:", *lines]))


if __name__ == "__main__":
    main()
