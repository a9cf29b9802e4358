"""Test databases: a migrated template per engine per session, a fresh copy per test.

PostgreSQL: ``OPTLINE_TEST_POSTGRES_URL`` names a server database to connect to (``.ci/run`` sets it). Each
test session creates its own template database and each test a database copied from it, so runs are
isolated from each other and from whatever else lives on the server. Under ``CI=true`` an unreachable
PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from optline.adapters.db.database import make_engine, migrate

DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class PostgresServer:
    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.admin = create_engine(
            self.url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        self.template = f"optline_{RUN_ID}_tpl"
        self.created: list[str] = []
        # Dropping a database waits for every backend on the server to release its files; the next test
        # need not wait for that, so drop_soon hands it to this thread (close waits for it).
        self.dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-db")

    def check(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def url_for(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def make_template(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        self.created.append(self.template)
        engine = make_engine(self.url_for(self.template))
        migrate(engine)
        engine.dispose()

    def fresh(self) -> str:
        name = f"optline_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            # WAL_LOG (PostgreSQL 15's default), not FILE_COPY: FILE_COPY forces two checkpoints per copy,
            # which flush every dirty page on the server and queue behind each other when several test
            # workers (or anyone else) write at once: 2–3.5 s a copy against 0.6–1.1 s (measured under load).
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY WAL_LOG'))
        self.created.append(name)
        return self.url_for(name)

    def drop(self, name_or_url: str) -> None:
        name = make_url(name_or_url).database if "://" in name_or_url else name_or_url
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.created:
            self.created.remove(name)

    def drop_soon(self, url: str) -> None:
        """Drop a test's database in the background: nothing uses it after the test."""
        self.dropper.submit(self.drop, url)

    def close(self) -> None:
        self.dropper.shutdown(wait=True)
        for name in list(self.created):
            if name != self.template:
                self.drop(name)
        if self.template in self.created:
            self.drop(self.template)
        self.admin.dispose()


_pg: PostgresServer | None = None
_pg_error: str | None = None


def postgres() -> PostgresServer:
    """The session's PostgreSQL server, or skip (fail under CI) when it is not reachable."""
    global _pg, _pg_error
    if _pg is None and _pg_error is None:
        url = os.environ.get("OPTLINE_TEST_POSTGRES_URL") or DEFAULT_PG
        try:
            server = PostgresServer(url)
            server.check()
            server.make_template()
            _pg = server
        except Exception as exc:
            _pg_error = (
                f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} unavailable: {exc}"
            )
    if _pg is None:
        if in_ci():
            pytest.fail(f"{_pg_error} (CI=true: the PostgreSQL run is mandatory)", pytrace=False)
        pytest.skip(_pg_error or "PostgreSQL unavailable")
    return _pg


def close_postgres() -> None:
    if _pg is not None:
        _pg.close()


_sqlite_template: Path | None = None


def sqlite_fresh(tmp_path: Path, tmp_root: Path) -> str:
    global _sqlite_template
    if _sqlite_template is None:
        tpl = tmp_root / "template.db"
        engine = make_engine(f"sqlite:///{tpl}")
        migrate(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        _sqlite_template = tpl
    target = tmp_path / "optline.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"
