"""Query plans, read the same way by every "reads an index, not the history" test (metrics, dashboard).

SQLite's EXPLAIN QUERY PLAN must show no SCAN of a history table, PostgreSQL's EXPLAIN no Seq Scan of one,
with enable_seqscan left on: a plan that only avoids a Seq Scan when it is forbidden proves nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection

from optline.bootstrap import Container


def sqlite_plan(conn: Connection, statement: str, parameters: Any) -> list[str]:
    return [r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]


def pg_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from pg_nodes(child)


def assert_no_scan(
    container: Container, statements: Iterable[tuple[str, Any]], history: set[str]
) -> set[str]:
    """Fails on any plan that scans a table of ``history``; returns the indexes the plans used."""
    used: set[str] = set()
    with container.db.read() as conn:
        for statement, parameters in statements:
            if container.db.is_sqlite:
                details = sqlite_plan(conn, statement, parameters)
                for d in details:
                    scanned = re.match(r"SCAN (\w+)", d)
                    assert not (scanned and scanned.group(1) in history), (statement, details)
                    if found := re.search(r"USING (?:COVERING )?INDEX (\w+)", d):
                        used.add(found.group(1))
            else:
                (plan,) = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()
                for node in pg_nodes(plan["Plan"]):
                    assert not (node["Node Type"] == "Seq Scan" and node.get("Relation Name") in history), (
                        statement,
                        json.dumps(plan, indent=1),
                    )
                    if "Index Name" in node:
                        used.add(node["Index Name"])
    return used
