"""The pages under load, in process: the opt-out link page and the dashboard overview.

Figures: requests per second for ``GET /u/<token>`` beside ``GET /healthz`` (the same stack doing one
``SELECT 1``), and the dashboard overview's queries on the demo data beside one ``count(*)`` of messages.
Run: ``python -m bench.web_pages [contacts]`` (default 2000 demo contacts).
"""

from __future__ import annotations

import sys
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.common import fresh_database, report
from optline.adapters.db.tables import messages
from optline.bootstrap import build
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import dashboard, demo


def _rate(client: TestClient, path: str, seconds: float = 3.0) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        assert client.get(path).status_code == 200
        n += 1
    return n / (time.perf_counter() - started)


def _per_second(fn: object, seconds: float = 3.0) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - started)


def run(engine: str, contacts: int) -> None:
    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url, public_url="http://testserver"))
        started = time.perf_counter()
        summary = demo.load(c, contacts=contacts)
        print(f"  [{engine}] demo: {summary.contacts:,} contacts, {summary.sent:,} messages in "
              f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        app = create_app(c)
        app.state.optout_limiter.limit = 10**9  # measuring the page, not the limiter
        client = TestClient(app)
        with c.db.read() as conn:
            token = conn.execute(
                select(messages.c.optout_token).where(messages.c.optout_token.is_not(None))
            ).scalar()
        report(f"[{engine}] GET /u/<token>", _rate(client, f"/u/{token}"), "req/s",
               "GET /healthz", _rate(client, "/healthz"))  # fmt: skip
        now = c.clock.now()

        def overview() -> None:
            with c.db.read() as conn:
                dashboard.overview(conn, now)
                dashboard.campaigns_summary(conn, c.clock)

        def count() -> None:
            with c.db.read() as conn:
                conn.execute(select(func.count()).select_from(messages)).scalar_one()

        report(f"[{engine}] overview + campaigns queries", 1e6 / _per_second(overview), "µs",
               "count(*) of messages", 1e6 / _per_second(count))  # fmt: skip
        c.close()


def main() -> None:
    contacts = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2000
    for engine in ("sqlite", "postgresql"):
        try:
            run(engine, contacts)
        except Exception as exc:  # PostgreSQL may be absent on a laptop
            print(f"  [{engine}] skipped: {exc!r}")


if __name__ == "__main__":
    main()
