"""Engine construction, transactions and migrations for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
URL_FORMATS = "sqlite:///path/to/optline.db or postgresql+psycopg://user:password@host:5432/dbname"
# Spellings other tools print (Heroku, libpq, docker images) that mean the driver optline ships.
SQLITE_BUSY_SECONDS = 30  # how long a SQLite writer waits for the one before it
_POSTGRES_ALIASES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")


class DatabaseUrlError(ValueError):
    """OPTLINE_DATABASE_URL names nothing optline can open; the message says what to write instead."""


def execute_ddl(conn: Connection, *, postgresql: list[str], sqlite: list[str]) -> None:
    """Run the statements written for this connection's engine (triggers and functions differ in dialect)."""
    for ddl in postgresql if conn.dialect.name == "postgresql" else sqlite:
        conn.exec_driver_sql(ddl)


def normalise_url(url: str) -> str:
    """The URL optline will open, or DatabaseUrlError naming what is wrong (never echoing a password)."""
    scheme = url.split("://", 1)[0] if "://" in url else url.split(":", 1)[0]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            f"OPTLINE_DATABASE_URL starting {scheme + ':'!r} is not a database URL; use {URL_FORMATS}"
        ) from None
    if parsed.drivername in _POSTGRES_ALIASES:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseUrlError(
                "OPTLINE_DATABASE_URL names no SQLite file (in-memory databases are per connection); "
                f"use {URL_FORMATS}"
            )
        return url
    raise DatabaseUrlError(
        f"OPTLINE_DATABASE_URL: unsupported database {parsed.drivername!r}; use {URL_FORMATS}"
    )


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other engines)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    return Path(parsed.database).expanduser().resolve()


def is_initialised(engine: Engine) -> bool:
    """Has ``optline init`` (a migration) ever run here? Never creates anything."""
    return inspect(engine).has_table("alembic_version")


def make_engine(url: str, **kwargs: Any) -> Engine:
    # A failed statement's error names the statement, not its values: those are message bodies, phone
    # numbers and tokens, and the error reaches the logs (a webhook that answers 500 logs its exception).
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS})
    if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
        raise ValueError("use a file-backed SQLite database; in-memory databases are per-connection")
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide when a transaction starts (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write transaction takes SQLite's write lock up front (BEGIN IMMEDIATE). A deferred transaction
        # that reads and then writes can fail with "database is locked" when another writer got in between,
        # without waiting for busy_timeout; taking the lock first makes writers queue instead.
        if conn.get_execution_options().get("optline_write", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class Database:
    """The unit of work: ``with db.transaction() as conn`` commits on success, rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time. Threads of this process that want to write queue here instead of
        # in SQLite's busy handler, which polls with sleeps of up to 100 ms: under a burst of webhooks that
        # polling made p99 seconds while the median was milliseconds. (Other processes still meet BEGIN
        # IMMEDIATE and busy_timeout.) A plain Lock, not an RLock: FastAPI enters a yield dependency's
        # transaction in one thread and leaves it in another. Waiting is bounded like busy_timeout.
        self._writer: threading.Lock | None = threading.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._write_turn(), self.engine.connect() as conn:
            conn.execution_options(optline_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        if self._writer is None:
            yield
            return
        if not self._writer.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise TimeoutError(
                f"SQLite: another write transaction of this process held the database for "
                f"{SQLITE_BUSY_SECONDS} s (a write transaction opened inside another?)"
            )
        try:
            yield
        finally:
            self._writer.release()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    if shipped_head() is not None and schema_revision(engine) == shipped_head():
        return  # the usual case for every CLI command: importing alembic to learn it costs ~0.3 s
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration this code ships (what ``optline init`` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


@lru_cache(maxsize=1)
def shipped_head() -> str | None:
    """``head_revision()`` read from the scripts' ``revision = "…"`` and ``down_revision = "…"`` lines
    without importing alembic: the one revision no script names as its down_revision. None (ask alembic)
    when the lines are not one plain chain of quoted names (a merge, a branch)."""
    revisions, parents = set(), set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        lines = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        if "revision" not in lines:
            continue
        revisions.add(lines["revision"])
        parents.add(lines.get("down_revision", "None"))
    if not all(r.startswith('"') and r.endswith('"') for r in revisions | (parents - {"None"})):
        return None
    heads = revisions - parents
    return heads.pop().strip('"') if len(heads) == 1 and len(parents) == len(revisions) else None


def schema_revision(engine: Engine) -> str | None:
    """The migration a database is at (None: never initialised). Reads only; raises if unreachable."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


SQLITE_JSON_IN_FROM = 200  # shorter lists keep plain IN (…)


class _Unindexed(ColumnElement[Any]):
    """``+column`` on SQLite, ``column`` elsewhere: chosen when the statement is compiled (see ``unindexed``)."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _unindexed_default(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_Unindexed, "sqlite")
def _unindexed_sqlite(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def unindexed(column: Any) -> Any:
    """``column`` kept off every index on SQLite: ``+column``, SQLite's documented way to disqualify a term
    from driving an index (the value is unchanged). Needed where a query's selective term is another one:
    optline runs no ANALYZE on SQLite, so its planner cannot tell a search of one person's messages
    (ix_messages_contact_time) from one of every message with a status (ix_messages_claim), and took the
    status index — a read of the whole sent history per batch. PostgreSQL plans from statistics and has no
    unary ``+`` for text: there the column is rendered as it is. Decided at compile time, so one statement
    built at import serves both engines."""
    return _Unindexed(column)


def one_of(conn: Connection, column: Any, values: list[Any]) -> Any:
    """``column IN values`` for large batches: one array parameter on PostgreSQL instead of thousands.

    (psycopg spends most of a big batch's time splitting a statement with thousands of placeholders.)
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy import any_, literal
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(literal(list(values), type_=ARRAY(column.type)))
    if len(values) > SQLITE_JSON_IN_FROM and all(type(v) in (int, str) for v in values):
        # SQLite: one JSON parameter instead of thousands of placeholders. Each list length is another SQL
        # text, and sqlite3 keeps 128 prepared statements: with 10,000-value lists that cache alone held
        # ~100 MB during a contacts import.
        from sqlalchemy import func, select

        return column.in_(select(func.json_each(json.dumps(list(values))).table_valued("value").c.value))
    return column.in_(values)
