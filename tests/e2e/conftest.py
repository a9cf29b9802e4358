"""Fixtures of the end-to-end tests that drive optline's processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from optline.adapters.clock import SystemClock
from optline.bootstrap import Container, build
from optline.config import Settings
from tests.support import fake_providers as fp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def live(db_url: str) -> Iterator[Container]:
    """A container on the test database with the system clock (what the processes under test use)."""
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
    yield c
    c.close()


@pytest.fixture
def fake_server() -> Iterator[fp.RemoteFake]:
    """The fake providers' server in a process of its own."""
    command = [sys.executable, "-m", "tests.support.fake_providers", "--port", "0", "--latency", "0"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    yield fp.RemoteFake(f"http://127.0.0.1:{port}")
    proc.terminate()
    proc.wait(10)
