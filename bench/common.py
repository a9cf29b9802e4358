"""Helpers shared by benchmarks: fresh databases on both engines, timing, printing ratios."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from optline.adapters.db.database import make_engine, migrate

PG_URL = os.environ.get("OPTLINE_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


@contextmanager
def fresh_database(engine: str) -> Iterator[str]:
    """A migrated, empty database URL (SQLite file in a temp dir, or a throwaway PostgreSQL database)."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            e = make_engine(url)
            migrate(e)
            e.dispose()
            yield url
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"optline_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        e = make_engine(url)
        migrate(e)
        e.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def report(label: str, value: float, unit: str, baseline_label: str, baseline: float) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(
        f"  {label:<44} {value:>14,.0f} {unit}   baseline ({baseline_label}) {baseline:>12,.0f} {unit}   ratio {ratio:6.1f}x"
    )
