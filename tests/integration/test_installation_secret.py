"""Without OPTLINE_SECRET_KEY (outside production) each installation generates its own signing key on first
start and keeps it in its database: no two installations share one, a restart keeps it (both engines)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from optline.bootstrap import build
from optline.config import Settings
from tests.support import databases


@pytest.fixture
def other_db_url(engine_name: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second, separate installation on the same engine."""
    if engine_name == "sqlite":
        other = tmp_path / "other"
        other.mkdir()
        yield databases.sqlite_fresh(other, tmp_path_factory.getbasetemp())
        return
    server = databases.postgres()
    url = server.fresh()
    yield url
    server.drop(url)


def _key(db_url: str, clock: Any) -> str:
    container = build(Settings(env="development", database_url=db_url), clock=clock)
    try:
        return container.secret_key()
    finally:
        container.close()


def test_each_installation_generates_and_keeps_its_own_key(
    db_url: str, other_db_url: str, clock: Any
) -> None:
    first = _key(db_url, clock)
    assert len(first) >= 32 and len(set(first)) >= 10
    assert first != "dev-insecure-change-me"
    assert _key(db_url, clock) == first  # a restart (a new process) signs with the same key
    assert _key(other_db_url, clock) != first  # another installation does not share it


def test_processes_starting_at_once_agree_on_one_key(db_url: str, clock: Any) -> None:
    with ThreadPoolExecutor(4) as pool:
        keys = set(pool.map(lambda _: _key(db_url, clock), range(4)))
    assert len(keys) == 1


def test_an_explicit_key_is_used_as_given(db_url: str, clock: Any) -> None:
    container = build(
        Settings(env="test", database_url=db_url, secret_key="explicit-key-" + "x1y2z3" * 5), clock=clock
    )
    try:
        assert container.secret_key() == "explicit-key-" + "x1y2z3" * 5
    finally:
        container.close()
