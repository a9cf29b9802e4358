"""Where a webhook STOP's CPU goes (issue 17): the bare endpoint, optline's application, and the same
application with its writes taken away, served alike and driven alike in alternating rounds.

``python -m bench.inbound_parts [--engines sqlite,postgresql] [--seconds 4] [--rounds 3]``

``python -m bench.inbound_parts --unknown-batches [--engines sqlite,postgresql] [--rounds 4]``: no HTTP; in
process, STOPs through the webhook's own verify and parse, recorded in batches of 16 as a group commit takes a
burst (``webhooks._InboundUnit.run_many``), from numbers of no contact yet against the baseline of subscribed
people's, rounds alternating (known, unknown, unknown, known, …). Printed: CPU of this process and SQL
statements per STOP (the database server's CPU is not in it on PostgreSQL). To compare with another
checkout's code, run it again with ``PYTHONPATH=<that checkout>/src``.

Three servers on the same machine, each one uvicorn process with the settings of ``optline serve``: the bare
endpoint (bench/_bare_inbound.py); optline's application (``create_app``: the webhook lane, verification,
parsing, the group commit; no dispatch worker, so the webhook path alone); and the same application with its
group commit replaced by one that records nothing and answers "recorded" at once (what the HTTP side costs:
uvicorn, the lane, the signature check, the parse, the access line). The load generator (bench/_load.py)
sends Twilio-signed STOPs to each in turn. Printed per round: requests/s, p99 and CPU per request of each,
and each optline figure as a share of the bare endpoint's in the same round.

Measured (2026-11-30, 2 cores shared with other work at load average 9-14; bench.inbound's docstring has
the reading): HTTP side alone 0.42-0.55 ms per request against bare 0.22-0.26 (82-131% of its requests/s in
8 of 9 rounds); with the writes 1.1-1.9 ms (15-37%).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from typing import Any

from tests.support.server import free_port

from bench.common import fresh_database
from bench.inbound import ROOT, SERVERS, TOKEN, bare_endpoint, load, prepare

KINDS = ("optline", "no-writes")


class _NoWrites:
    """A group commit that records nothing: the request is verified and parsed, then answered at once."""

    async def run(self, unit: Any) -> dict[str, Any]:
        return {"status": "recorded", "intent": None}


def serve(port: int, kind: str) -> None:
    """The server of one ``kind`` (run in a process of its own by ``app_server``)."""
    import uvicorn

    from optline.bootstrap import build
    from optline.entrypoints.api.app import create_app
    from optline.logs import configure

    c = build()
    configure(c.settings.effective_log_format)
    app = create_app(c)
    if kind == "no-writes":
        app.state.group_commit = _NoWrites()
    # As `optline serve` configures uvicorn (entrypoints/cli/server.py).
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="info", access_log=False, log_config=None
    )
    uvicorn.Server(config).run()


def app_server(db_url: str, kind: str) -> Any:
    from bench.inbound import running

    port = free_port()
    env = {"OPTLINE_DATABASE_URL": db_url, "OPTLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "OPTLINE_TWILIO_AUTH_TOKEN": TOKEN, "OPTLINE_ENV": "development", "OPTLINE_LOG_FORMAT": "json"}  # fmt: skip
    return running(
        [sys.executable, "-m", "bench.inbound_parts", "--serve", kind, "--port", str(port)], port, env
    )


def run_engine(engine: str, args: argparse.Namespace) -> None:
    print(f"\n{engine}:  (load average {os.getloadavg()[0]:.1f})", flush=True)
    with fresh_database(engine) as db_url:
        prepare(db_url, args.contacts, 0)
        with ExitStack() as stack:
            urls = {"bare": stack.enter_context(bare_endpoint())}
            for kind in KINDS:
                urls[kind] = stack.enter_context(app_server(db_url, kind))
            phone = 0
            for kind in KINDS:  # warm up, on numbers far from the measured ones
                load(urls[kind], 10_000_000 + phone, 1, 4)
                phone += 5_000
            for round_ in range(args.rounds):
                figures = {}
                for kind in ("bare", *KINDS):
                    r = load(urls[kind], phone, args.seconds, args.connections)
                    phone += r["requests"] + 1000
                    figures[kind] = r
                base = figures["bare"]
                cells = [f"bare {base['rps']:6,.0f} req/s {base['cpu_ms']:.2f} ms"]
                for kind in KINDS:
                    r = figures[kind]
                    bad = sum(v for k, v in r["statuses"].items() if not str(k).startswith("2"))
                    cells.append(
                        f"{kind} {r['rps']:6,.0f} req/s ({100 * r['rps'] / base['rps']:3.0f}%) "
                        f"{r['cpu_ms']:.2f} ms p99 {r['p99_ms']:4.0f} ms" + (f" non-2xx {bad}" if bad else "")
                    )
                print(f"  round {round_ + 1}: " + "   ".join(cells), flush=True)
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def unknown_batches(engine: str, args: argparse.Namespace) -> None:
    """Batches of 16 STOPs in process: from subscribed people (the baseline) and from numbers of no contact."""
    import gc
    import time
    import uuid

    from sqlalchemy import event
    from twilio.request_validator import RequestValidator

    import optline
    from bench._load import signed
    from bench.inbound import BATCH
    from optline.adapters.clock import SystemClock
    from optline.adapters.providers.webhook_request import WebhookRequest
    from optline.bootstrap import build
    from optline.config import Settings
    from optline.entrypoints.api.webhooks import committed
    from optline.entrypoints.api.webhooks import prepare as prepare_unit

    per_round = args.batches * BATCH
    print(f"\n{engine}: (optline from {os.path.dirname(optline.__file__)})", flush=True)
    with fresh_database(engine) as db_url:
        prepare(db_url, (args.rounds + 1) * per_round, 0)  # subscribed people 0…, one round's more to warm up
        url = "http://127.0.0.1:1/webhooks/twilio/sms"
        c = build(
            Settings(
                env="test", database_url=db_url, twilio_auth_token=TOKEN, public_url=url.rsplit("/w", 1)[0]
            ),
            clock=SystemClock(),
        )
        validator = RequestValidator(TOKEN)
        statements: list[str] = []
        event.listen(c.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        next_phone = {"known": 0, "unknown": 50_000_000}  # nobody is subscribed from 50,000,000 on

        def run(kind: str, n: int) -> tuple[float, float, float]:
            first = next_phone[kind]
            next_phone[kind] += n
            requests = []
            for i in range(first, first + n):
                _, body, headers = signed(validator, url, i, uuid.uuid4().hex[:8])
                requests.append(
                    WebhookRequest(method="POST", url=url, headers={k.lower(): v for k, v in headers.items()},
                                   body=body, query=[], received_at=c.clock.now())
                )  # fmt: skip
            before = len(statements)
            cpu, wall = time.process_time(), time.perf_counter()
            for at in range(0, n, BATCH):
                units: list[Any] = [prepare_unit(c, "twilio", "sms", r) for r in requests[at : at + BATCH]]
                with c.db.transaction() as conn:
                    payloads = units[0].run_many(conn, units)
                for payload in payloads:
                    assert payload["status"] == "recorded" and payload["consent_event_id"], payload
                    committed(payload)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            return 1000 * cpu / n, 1000 * wall / n, (len(statements) - before) / n

        run("known", per_round)  # warm caches, the pool and the statements of both kinds
        run("unknown", per_round)
        gc.collect()
        gc.freeze()  # what prepare built, out of the collector's sight (see bench.inbound's in_process)
        for round_ in range(args.rounds):
            order = ("known", "unknown") if round_ % 2 == 0 else ("unknown", "known")
            figures = {kind: run(kind, per_round) for kind in order}
            (kc, kw, ks), (uc, uw, us) = figures["known"], figures["unknown"]
            print(
                f"  round {round_ + 1} (load {os.getloadavg()[0]:.1f}): known {kc:.2f} ms CPU {kw:.2f} ms wall "
                f"{ks:.2f} stmt/STOP   unknown {uc:.2f} ms CPU {uw:.2f} ms wall {us:.2f} stmt/STOP   "
                f"unknown/known CPU {uc / kc:.2f}x",
                flush=True,
            )
        gc.unfreeze()
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--contacts", type=int, default=60_000, help="subscribed people before the load")
    parser.add_argument(
        "--unknown-batches",
        action="store_true",
        help="in process: batches of 16 STOPs from numbers of no contact vs subscribed people's (no HTTP)",
    )
    parser.add_argument("--batches", type=int, default=10, help="--unknown-batches: batches per kind a round")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])  # (python -m bench: defaults)
    if args.serve:
        serve(args.port, args.serve)
        return
    os.chdir(ROOT)
    for engine in args.engines.split(","):
        if args.unknown_batches:
            unknown_batches(engine, args)
        else:
            run_engine(engine, args)
    SERVERS.clear()


if __name__ == "__main__":
    main()
