"""Inserting many rows at once: ``COPY`` on PostgreSQL, multi-row ``INSERT … VALUES`` on SQLite.

A batched INSERT through psycopg spends most of its time building and splitting one statement with
thousands of placeholders (~250 µs a row for consent events with RETURNING, measured by
``bench/import_contacts.py``); ``COPY`` streams the rows with no statement to parse. On SQLite, SQLAlchemy inserts rows with
RETURNING one statement at a time; one prepared statement run by ``executemany`` was the fast path there,
until its statement per row turned out to copy ~5 pages to a statement journal for every ledger event
(``insert_tuples``): now a statement inserts up to ``SQLITE_ROWS_PER_INSERT`` rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import JSON, Connection, DateTime, Select, Table, Text, func, insert, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import DBAPIError

# Below this, COPY's round trips cost more than they save.
COPY_FROM = 64


def _plan(table: Table, columns: list[str], json_text: bool) -> list[tuple[str, Any, bool]]:
    """Per column: its name, the Python-side default to fill in, whether to serialise it as JSON text."""
    plan = []
    for name in columns:
        column = table.c[name]
        default: Any = None
        generator: Any = column.default
        if generator is not None and generator.is_scalar:
            default = generator.arg
        elif generator is not None and generator.is_callable:
            default = generator.arg(None)  # SQLAlchemy wraps callables to take the execution context
        plan.append((name, default, json_text and isinstance(column.type, JSON)))
    return plan


def _row_values(plan: list[tuple[str, Any, bool]], row: Mapping[str, Any]) -> list[Any]:
    out = []
    for name, default, as_json in plan:
        value = row.get(name, default)
        # json.dumps: what SQLAlchemy's JSON type writes (its default serializer)
        out.append(json.dumps(value) if as_json and value is not None else value)
    return out


def copy_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts keyed by column name; Python-side column defaults are applied)."""
    if not rows:
        return
    if len(rows) < COPY_FROM:
        keys = {k for row in rows for k in row}
        if all(len(row) == len(keys) for row in rows):
            conn.execute(insert(table), list(rows))
        else:  # executemany needs one set of keys
            for row in rows:
                conn.execute(insert(table).values(**row))
        return
    columns = [c.name for c in table.columns if any(c.name in row for row in rows) or c.default is not None]
    if conn.dialect.name == "postgresql":
        plan = _plan(table, columns, json_text=True)
        insert_tuples(conn, table.name, columns, [_row_values(plan, row) for row in rows])
        return
    # SQLite: one prepared statement, values converted by the columns' own SQLAlchemy types (so dates and
    # JSON are stored exactly as an ordinary insert stores them), without building a statement per row.
    plan = _plan(table, columns, json_text=False)
    converters = [_converter(table.c[name].type, conn) for name in columns]
    values = [
        tuple(
            convert(v) if convert is not None and v is not None else v
            for convert, v in zip(converters, _row_values(plan, row), strict=True)
        )
        for row in rows
    ]
    insert_tuples(conn, table.name, columns, values)


def insert_values(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert tuples of Python values (JSON columns already as JSON text): COPY on PostgreSQL (psycopg adapts
    the values), multi-row INSERTs on SQLite (``insert_tuples``) with times converted by the columns' own
    type, so they are stored exactly as an ordinary insert stores them. No dicts, no defaults: the fast path of
    ``copy_rows`` for callers that build every column themselves (an import's million events)."""
    if not rows or conn.dialect.name == "postgresql":
        insert_tuples(conn, table.name, columns, rows)
        return
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(columns):
        type_ = table.c[name].type
        if isinstance(type_, DateTime) and (convert := _converter(type_, conn)) is not None:
            converters.append((i, convert))
    if converters:
        # Rows share few time objects (an import's one recorded_at, its times of consent parsed once per
        # distinct text): each object is formatted once, found again by identity — no call per value. The
        # memo holds the objects, so an id cannot be reused while it lives.
        memo: dict[int, tuple[Any, Any]] = {}
        converted = []
        for row in rows:
            values = list(row)
            for i, convert in converters:
                value = values[i]
                if value is not None:
                    hit = memo.get(id(value))
                    if hit is None:
                        hit = memo[id(value)] = (value, convert(value))
                    values[i] = hit[1]
            converted.append(tuple(values))
        rows = converted
    insert_tuples(conn, table.name, columns, rows)


def _converter(type_: Any, conn: Connection) -> Callable[[Any], Any] | None:
    """The column type's bind processor; for times, remembered per value: a batch's rows share a few
    (an import's events one ``recorded_at`` and few distinct times of consent), each formatted once."""
    processor = type_._cached_bind_processor(conn.dialect)
    if processor is None or not isinstance(type_, DateTime):
        return cast("Callable[[Any], Any] | None", processor)

    # Keyed by the offset too: equal times in two zones are one instant but not one wall-clock text.
    @lru_cache(maxsize=1024)
    def formatted(value: datetime, _offset: timedelta | None) -> Any:
        return processor(value)

    return lambda value: formatted(value, value.utcoffset())


# Rows per multi-row INSERT on SQLite (fewer if the library's limit on a statement's parameters says so:
# 32,766 by default since SQLite 3.32, 999 before). A statement journals each page it changes once, so
# more rows a statement journal fewer pages; 2,000 rows of an event is ~26,000 parameters.
SQLITE_ROWS_PER_INSERT = 2000


def insert_tuples(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows of driver-ready values (JSON as text): COPY on PostgreSQL, multi-row INSERTs on SQLite."""
    if not rows:
        return
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        statement = f"COPY {table} ({names}) FROM STDIN"
        dbapi = conn.dialect.loaded_dbapi
        try:
            with driver.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
        except dbapi.Error as exc:
            # Raised as SQLAlchemy raises a failed statement (a foreign key refused, the server gone): callers
            # catch DBAPIError, and a driver's own exception would escape them (an import would not say
            # which lines were imported).
            raise DBAPIError.instance(statement, None, exc, dbapi.Error) from exc
        return
    # SQLite: multi-row VALUES, up to SQLITE_ROWS_PER_INSERT rows a statement, not a statement per row. Each
    # statement of a transaction that may fail part-way (a trigger, a foreign key, a unique index: a ledger
    # event has all three) first copies every page it will change to a statement journal, which spills to a
    # temporary file past 64 KiB: executemany wrote ~5 pages of 4 KiB there for every event of an import (10
    # write calls a row), a sixth of the import process's time. A statement of many rows copies each page
    # it changes once. The rest after the full batches goes in statements of 2^k rows: few statement texts
    # per table whatever the row count (the driver keeps prepared statements by their text).
    # Through the driver's cursor, inside the caller's transaction (every caller holds one): SQLAlchemy would
    # put the whole statement, thousands of placeholders, in a failure's message.
    width = len(columns)
    driver = conn.connection.driver_connection
    most = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    per = max(1, min(SQLITE_ROWS_PER_INSERT, most // width))
    one = "(" + ", ".join("?" * width) + ")"
    dbapi = conn.dialect.loaded_dbapi
    at, size = 0, per
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        while at < len(rows):
            while len(rows) - at < size:
                size = 1 << ((len(rows) - at).bit_length() - 1)  # the largest power of two that fits
            statement = f"INSERT INTO {table} ({names}) VALUES " + ", ".join([one] * size)
            cursor.execute(statement, [v for row in rows[at : at + size] for v in row])
            at += size
    except dbapi.Error as exc:  # raised as SQLAlchemy raises a failed statement (see above), named briefly
        named = (
            f"INSERT INTO {table} ({names}) VALUES {one} × {size} (rows {at + 1}–{at + size} of {len(rows)})"
        )
        raise DBAPIError.instance(named, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def fetch_tuples(conn: Connection, statement: Select[Any]) -> list[tuple[Any, ...]]:
    """All rows of ``statement`` as the driver returns them: plain tuples, no result processing (text,
    numbers and the driver's own types). SQLAlchemy's rows cost twice the driver's to build and unpack
    (~1.5 µs a row more, measured on an import's 10,000-row chunks). Its parameters go to the driver as
    they are: for plain values (numbers, text), not values a column type must convert first."""
    compiled = statement.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    args: Any = params
    if compiled.positiontup is not None:  # SQLite's "?" placeholders take a sequence, in order
        args = tuple(params[name] for name in compiled.positiontup)
    sql, dbapi = str(compiled), conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    except dbapi.Error as exc:  # raised as SQLAlchemy raises a failed statement (see insert_tuples)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def allocate_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """``count`` fresh ids for rows of ``table`` inserted by ``copy_rows``.

    PostgreSQL: values of the id sequence. SQLite: the ids after the largest, which is safe because every
    write transaction holds SQLite's write lock from its start (``BEGIN IMMEDIATE``, ``Database.transaction``).
    """
    if conn.dialect.name == "postgresql":
        # The sequence's name in a scalar subquery, looked up once: as a plain argument of nextval,
        # pg_get_serial_sequence ran for every row (7.5 µs of the server's time per id, 0.8 without). Read by
        # the driver's cursor, as one array: SQLAlchemy's result rows cost more than the ids themselves.
        driver = conn.connection.driver_connection
        with driver.cursor() as cur:  # type: ignore[union-attr]
            cur.execute(
                "SELECT array(SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id'))::regclass)"
                " FROM generate_series(1, %s))",
                (table.name, count),
            )
            row = cur.fetchone()
            assert row is not None
            return list(row[0])
    top = conn.execute(_top_id(table)).scalar_one()
    return list(range(top + 1, top + 1 + count))


_TOP_IDS: dict[Table, Any] = {}


def _top_id(table: Table) -> Any:
    """``SELECT coalesce(max(id), 0)`` of ``table`` (one probe of its primary key), built once per table: a
    burst's batch asks it twice on SQLite, and building the statement cost about what running it did."""
    if table not in _TOP_IDS:
        _TOP_IDS[table] = select(func.coalesce(func.max(table.c.id), 0))
    return _TOP_IDS[table]


@contextmanager
def large_cache(conn: Connection, mib: int = 64, temp_mib: int = 16) -> Iterator[None]:
    """SQLite: a page cache of ``mib`` MiB for this connection's database and ``temp_mib`` MiB for its
    temporary tables while inside (default 2 MiB each), restored after.

    An import grows half a dozen B-trees by a million keys each; with the default cache most of those
    inserts re-read pages through the operating system. Its staging table (temporary) is read four times a
    chunk: a chunk's rows (~3.5 MB) outgrew the default cache, and every pass read them again from the
    temporary file. Durability is unchanged (a cache, not a pragma about syncing). PostgreSQL: nothing
    (shared_buffers is the server's)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    before = {
        schema: driver.execute(f"PRAGMA {schema}.cache_size").fetchone()[0] for schema in ("main", "temp")
    }
    # negative: KiB (sqlite.org/pragma.html#pragma_cache_size)
    driver.execute(f"PRAGMA main.cache_size={-1024 * mib}")
    driver.execute(f"PRAGMA temp.cache_size={-1024 * temp_mib}")
    try:
        yield
    finally:
        if not conn.invalidated:
            for schema, size in before.items():
                driver.execute(f"PRAGMA {schema}.cache_size={int(size)}")


def unnested(table: Table, columns: Sequence[str], name: str = "u") -> Any:
    """PostgreSQL: ``json_to_recordset(:u_rows) AS u(a <type>, b <type>, …)``, a batch's rows as one JSON
    parameter, to insert a batch from (``INSERT … SELECT``) or update one from; the parameter comes from
    ``unnest_params``. The record's columns have the table's types, so the server converts each value as
    it would the column's own input.

    Why not a multi-row VALUES: its text grows with the batch, and psycopg parses (and caches) only
    statements of at most 50 parameters; a burst's batches paid a regular-expression split of a new text
    every time (a sixth of a webhook's CPU). Here the text is one whatever the size, prepared once.
    Why not one array per column (``unnest(:u_a), unnest(:u_b), …``, as before): psycopg dumps a Python list
    to an array in Python, each element searched and escaped by regular expressions — ~50 arrays a batch
    of STOPs were a quarter of its recording's CPU; ``json.dumps`` writes the whole batch in C."""
    from sqlalchemy import bindparam, column
    from sqlalchemy.dialects.postgresql import JSON as PG_JSON

    return (
        func.json_to_recordset(sql_cast(bindparam("u_rows", type_=Text), PG_JSON))
        .table_valued(*(column(c, table.c[c].type) for c in columns))
        .render_derived(name=name, with_types=True)
    )


def update_unnested(table: Table, keys: Sequence[str], columns: Sequence[str]) -> Any:
    """PostgreSQL: one UPDATE of ``table`` for a whole batch — each row found by ``keys``, its ``columns`` set
    — FROM the rows as arrays (``unnested``; parameters from ``unnest_params`` over keys + columns). An
    executemany runs the UPDATE once per row, each with its own parameters built and sent."""
    rows = unnested(table, [*columns, *keys])
    where = [table.c[k] == rows.c[k] for k in keys]
    return table.update().where(*where).values({c: rows.c[c] for c in columns})


def unnest_params(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The parameter of ``unnested``: ``rows``' values of ``columns`` (missing keys: NULL) as JSON text."""
    return {"u_rows": json.dumps([{c: row.get(c) for c in columns} for row in rows], default=_json_value)}


def _json_value(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: times as ISO 8601 (with their offset: the columns are
    ``timestamp with time zone``, and the server reads the offset as it reads a bound datetime's)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a value for a batch's JSON rows")
