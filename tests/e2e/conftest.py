"""Fixtures of the end-to-end tests that drive optline's processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from optline.adapters.clock import SystemClock
from optline.bootstrap import Container, build
from optline.config import Settings


@pytest.fixture
def live(db_url: str) -> Iterator[Container]:
    """A container on the test database with the system clock (what the processes under test use)."""
    c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
    yield c
    c.close()
