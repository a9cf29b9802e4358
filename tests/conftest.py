"""Fixtures shared by every test. Database tests take ``db_url`` (or ``container``) and run on both engines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from optline.adapters.clock import FrozenClock
from optline.bootstrap import Container, build
from optline.config import Settings
from tests.support import databases
from tests.support import fake_providers as fp

ENGINES = ["sqlite", "postgresql"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    databases.close_postgres()


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(engine_name: str, tmp_path, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if engine_name == "sqlite":
        yield databases.sqlite_fresh(tmp_path, tmp_path_factory.getbasetemp())
        return
    server = databases.postgres()
    url = server.fresh()
    yield url
    server.drop(url)


@pytest.fixture
def clock() -> FrozenClock:
    # A Thursday afternoon in New York: inside every quiet-hours window unless a test moves it.
    return FrozenClock(datetime(2026, 11, 26, 19, 0, tzinfo=UTC))


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver")


@pytest.fixture
def container(settings: Settings, clock: FrozenClock) -> Iterator[Container]:
    c = build(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture
def fake_server() -> Iterator[fp.RemoteFake]:
    """The fake providers' server in a process of its own (what the e2e and reliability suites send to)."""
    root = Path(__file__).resolve().parents[1]
    # No latency: suites that are about latency set it (RemoteFake.configure / /_fake/latency).
    command = [sys.executable, "-m", "tests.support.fake_providers", "--port", "0", "--latency", "0"]
    proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    yield fp.RemoteFake(f"http://127.0.0.1:{port}")
    proc.terminate()
    proc.wait(10)
