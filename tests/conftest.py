"""Fixtures shared by every test. Database tests take ``db_url`` (or ``container``) and run on both engines."""

from __future__ import annotations

import os
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


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist still runs
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` (what ``make test`` runs; DEVELOPERS.md, Parallel runs), with the browser tests as
    one group: one worker runs them in file order, so a module's browser (and the server it signed in to)
    starts once, its tests see each other's state as they expect, and one Chromium at a time competes with
    the other workers for the CPU. (xdist's own ``xdist_group`` mark is lost under pytest 9: xdist 3.8 sets
    ``item._nodeid``, which pytest 9 no longer reads. So the group is chosen here, by path.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BrowserTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "browser" if nodeid.startswith("tests/e2e/test_browser_") else nodeid

    return BrowserTestsTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In xdist workers (each collects the items it is handed from): the tests marked slow (a minute or
    # more each) first, so the run does not end with one worker busy on them while the others idle. The
    # sort is stable, so files keep their order; serially the order is the files' own.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
    server.drop_soon(url)


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
