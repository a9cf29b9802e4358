"""The webhook lane's CPU per STOP in process (issue 17): ``serve``'s ASGI application driven without uvicorn
and without a socket, so that what the application itself costs per request shows without the HTTP server's
and the load generator's share (and with much less of a loaded machine's noise than over HTTP).

``python -m bench.inbound_asgi [--engines sqlite,postgresql] [--requests 3000] [--concurrency 16]
[--rounds 3] [--no-writes] [--profile]``

A fresh migrated database with one program and subscribed people; ``create_app`` as ``serve`` builds it (JSON
logs, written to /dev/null); ``--concurrency`` requests in flight at a time, each a Twilio-signed STOP from a
distinct number, posted through the application's ASGI interface. Printed per round: CPU time (process_time:
every thread of the process) per request, and the median of the rounds. ``--no-writes`` replaces the
group commit by one that records nothing (the HTTP side alone: lane, signature check, parse, access line).
To compare two builds, run this module of each alternately (PYTHONPATH of the other worktree).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import statistics
import sys
import time
import uuid
from typing import Any

from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from bench._load import signed
from bench.common import fresh_database
from bench.inbound import TOKEN, prepare

URL = "http://127.0.0.1:8000"
PATH = "/webhooks/twilio/sms"


class _NoWrites:
    """A group commit that records nothing: the request is verified and parsed, then answered at once."""

    async def run(self, unit: Any) -> dict[str, Any]:
        return {"status": "recorded", "intent": None}


def _scope(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw += [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
    return dict(
        type="http",
        asgi={"version": "3.0", "spec_version": "2.3"},
        http_version="1.1",
        method="POST",
        scheme="http",
        path=PATH,
        raw_path=PATH.encode(),
        query_string=b"",
        root_path="",
        headers=raw,
        client=("127.0.0.1", 50000),
        server=("127.0.0.1", 8000),
        state={},
    )


async def _post(app: Any, body: bytes, headers: dict[str, str]) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # pragma: no cover - the app reads the body once
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(body, headers), receive, send)
    return status


async def _drive(app: Any, requests: list[tuple[bytes, dict[str, str]]], concurrency: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    todo = iter(requests)

    async def client() -> None:
        for body, headers in todo:
            status = await _post(app, body, headers)
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def run_engine(engine: str, args: argparse.Namespace) -> None:
    from optline.bootstrap import build
    from optline.config import Settings
    from optline.entrypoints.api.app import create_app
    from optline.logs import configure

    print(f"\n{engine}:  (load average {os.getloadavg()[0]:.1f})", flush=True)
    total = args.requests * (args.rounds + 1)
    with fresh_database(engine) as db_url:
        prepare(db_url, total, 0)
        c = build(
            Settings(
                env="development",
                database_url=db_url,
                twilio_auth_token=SecretStr(TOKEN),
                public_url=URL,
                log_format="json",
            )
        )
        configure("json")
        with open(os.devnull, "w") as devnull:
            handler = logging.getLogger().handlers[0]
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(devnull)
            app = create_app(c)
            if args.no_writes:
                app.state.group_commit = _NoWrites()
            validator = RequestValidator(TOKEN)
            tag = uuid.uuid4().hex[:8]
            n = args.requests
            batches = [
                [signed(validator, URL + PATH, i, tag)[1:] for i in range(r * n, (r + 1) * n)]
                for r in range(args.rounds + 1)
            ]
            profiler = cProfile.Profile() if args.profile else None
            figures = []
            for r, batch in enumerate(batches):
                cpu = time.process_time()
                if profiler and r:
                    profiler.enable()
                statuses = asyncio.run(_drive(app, batch, args.concurrency))
                if profiler and r:
                    profiler.disable()
                cpu = (time.process_time() - cpu) / len(batch) * 1000
                if r == 0:
                    continue  # warm-up: caches, the pool, the writer thread
                figures.append(cpu)
                print(f"  round {r}: {cpu:.3f} ms CPU per request  statuses {statuses}", flush=True)
            print(f"  median {statistics.median(figures):.3f} ms CPU per request", flush=True)
            if profiler:
                pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
                    int(os.environ.get("ROWS", "40"))
                )
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=3000, help="STOPs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-writes", action="store_true", help="the HTTP side alone: nothing recorded")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured rounds")
    args = parser.parse_args(sys.argv[1:])
    for engine in args.engines.split(","):
        run_engine(engine, args)


if __name__ == "__main__":
    main()
