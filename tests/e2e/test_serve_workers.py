"""``optline serve --workers N``: several processes on one port answer webhooks, every STOP they answered
2xx is an opt-out, /metrics adds the processes up, SIGTERM stops them all gracefully; and the page limits
(here the login form's) hold across processes because they are counted in the database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from optline.adapters.clock import SystemClock
from optline.adapters.db import ledger
from optline.adapters.db.tables import consent_events, subscriptions
from optline.bootstrap import Container, build
from optline.config import Settings
from tests.support import databases, outbound, signing
from tests.support.server import serve

SENDER = "+14155550100"
PEOPLE = 40


@pytest.fixture
def pg_live() -> Iterator[Container]:
    """PostgreSQL only: several serve processes are refused on SQLite (test_workers_need_postgresql)."""
    c = build(Settings(env="test", database_url=databases.postgres().fresh()), clock=SystemClock())
    yield c
    c.close()


def test_serve_workers_answer_and_every_stop_lands(pg_live: Container) -> None:
    _program, ids = outbound.seed(pg_live, PEOPLE)
    env = {"OPTLINE_TWILIO_AUTH_TOKEN": signing.TWILIO_TOKEN}
    with serve(pg_live.settings.database_url, "--workers", "2", **env) as server:

        def stop(i: int) -> int:
            fx = signing.inbound_fixture(
                "twilio", sid=f"SMworkers{i:024d}", from_=outbound.phone(i), to=SENDER, body="STOP"
            )
            signed = signing.sign("twilio", fx, server.url)
            r = httpx.post(server.url + signed.path, content=signed.body, headers=signed.headers, timeout=30)
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(stop, range(PEOPLE)))
        assert codes == [200] * PEOPLE

        # Each process counted its own requests; /metrics (multiprocess mode) adds them up, whichever answers.
        text = httpx.get(server.url + "/metrics", timeout=30).text
        recorded = re.search(
            r'optline_webhook_requests_total\{kind="sms",outcome="recorded",provider="twilio"\} (\S+)', text
        )
        assert recorded is not None and float(recorded.group(1)) == PEOPLE, text[:2000]

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, "".join(server.output)
    log = "".join(server.output)
    assert log.count("Finished server process") == 2, log  # both processes shut down the graceful way
    with pg_live.db.read() as conn:
        states = conn.execute(
            select(subscriptions.c.status, func.count())
            .where(subscriptions.c.contact_id.in_(ids))
            .group_by(subscriptions.c.status)
        ).all()
        assert states == [("unsubscribed", PEOPLE)]
        assert (
            conn.execute(select(func.count()).where(consent_events.c.action == "opt_out")).scalar() == PEOPLE
        )
        assert ledger.verify(conn).ok


def test_workers_need_postgresql(tmp_path: object) -> None:
    env = {**os.environ, "OPTLINE_DATABASE_URL": f"sqlite:///{tmp_path}/optline.db", "OPTLINE_ENV": "test",
           "COLUMNS": "200"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "optline", "serve", "--workers", "2", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--workers > 1 needs PostgreSQL" in done.stdout + done.stderr


def test_two_serve_processes_share_the_login_limit(live: Container) -> None:
    """Ten sign-in attempts from one address per five minutes, whichever process they reach."""
    with serve(live.settings.database_url) as a, serve(live.settings.database_url) as b:
        codes = [
            httpx.post(
                server.url + "/login", data={"username": "x", "password": "wrong"}, timeout=30
            ).status_code
            for server in (a, b) * 5
        ]
        assert 429 not in codes  # ten attempts (refused for their missing form token, but counted)
        assert (
            httpx.post(a.url + "/login", data={"username": "x", "password": "y"}, timeout=30).status_code
            == 429
        )
        assert (
            httpx.post(b.url + "/login", data={"username": "x", "password": "y"}, timeout=30).status_code
            == 429
        )
