"""Every write endpoint commits before its response starts (invariant 3), on both engines.

The ASGI app is driven directly (no TestClient): ``send`` is wrapped, and at ``http.response.start`` the
database is read from a second connection, which sees only what is committed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select

from optline.adapters.db import api_keys
from optline.adapters.db.tables import consent_events, programs, subscriptions
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from tests.support import web

Probe = Callable[[Connection], Any]


def call(
    container: Container, method: str, path: str, *, headers: dict[str, str], body: bytes, probe: Probe
) -> tuple[int, Any]:
    """Run one request through the ASGI app; returns (status, what ``probe`` read when the response started).

    An exception the app raises after it started answering is swallowed here: what the client saw is the
    status it was sent.
    """
    app = create_app(container)
    seen: dict[str, Any] = {}
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.sleep(3600)  # the client keeps the connection open until the answer is complete
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            with container.db.read() as conn:  # a second connection: only committed data is visible
                seen["probe"] = probe(conn)
            seen["status"] = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if "status" not in seen:
                raise

    asyncio.run(run())
    return seen["status"], seen["probe"]


@pytest.fixture
def auth(container: Container) -> dict[str, str]:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def _status_of(contact_id: int) -> Probe:
    def probe(conn: Connection) -> str | None:
        q = select(subscriptions.c.status).where(subscriptions.c.contact_id == contact_id)
        return conn.execute(q).scalar_one_or_none()

    return probe


@pytest.fixture
def contact(container: Container) -> dict[str, Any]:
    """+14155550134, subscribed to the program "deals"."""
    return web.subscriber(container, web.program(container))


def test_consent_api_commits_before_the_response_starts(
    container: Container, auth: dict[str, str], contact: dict[str, Any]
) -> None:
    body = json.dumps({"program": "deals", "action": "opt_out"}).encode()
    status, seen = call(
        container,
        "POST",
        "/v1/contacts/+14155550134/consent",
        headers=auth,
        body=body,
        probe=_status_of(contact["id"]),
    )
    assert status == 201
    assert seen == "unsubscribed"


def test_program_api_commits_before_the_response_starts(container: Container, auth: dict[str, str]) -> None:
    body = json.dumps({"name": "deals", "brand": "Acme", "help_contact": "help@acme.example"}).encode()

    def probe(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(programs)).scalar_one())

    status, seen = call(container, "POST", "/v1/programs", headers=auth, body=body, probe=probe)
    assert status == 201
    assert seen == 1


@pytest.fixture
def failing_commit(container: Container, auth: dict[str, str], contact: dict[str, Any]) -> Iterator[None]:
    """Every write transaction's commit fails from here on, as when the database goes away between the work
    and the commit (reads, such as the probe's, still commit)."""

    container.secret_key()  # generated (and committed) on first start, before the failure begins

    def refuse(conn: Connection) -> None:
        if conn.get_execution_options().get("optline_write"):
            raise RuntimeError("commit failed (test)")

    event.listen(container.db.engine, "commit", refuse)
    yield
    event.remove(container.db.engine, "commit", refuse)


def test_a_failed_commit_answers_5xx_and_stores_nothing(
    container: Container, auth: dict[str, str], contact: dict[str, Any], failing_commit: None
) -> None:
    body = json.dumps({"program": "deals", "action": "opt_out"}).encode()

    def events(conn: Connection) -> tuple[int, str | None]:
        count = int(conn.execute(select(func.count()).select_from(consent_events)).scalar_one())
        return count, _status_of(contact["id"])(conn)

    status, seen = call(
        container, "POST", "/v1/contacts/+14155550134/consent", headers=auth, body=body, probe=events
    )
    assert status >= 500
    assert seen == (1, "subscribed")  # only the opt-in from the fixture: the opt-out was not stored


def test_every_route_with_a_transaction_closes_it_before_answering(container: Container) -> None:
    """The /v1 routers and /join take their transaction from ``get_conn``: each must close it (commit) when
    the route returns, not after the response is sent (FastAPI's default for yield dependencies)."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from optline.entrypoints.api.deps import get_conn

    def conn_scopes(dependant: Dependant) -> Iterator[str | None]:
        for dep in dependant.dependencies:
            if dep.call is get_conn:
                yield dep.scope
            yield from conn_scopes(dep)

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            included = getattr(route, "original_router", None)  # FastAPI ≥ 0.13x keeps included routers whole
            if included is not None:
                yield from api_routes(included.routes)

    routes = list(api_routes(create_app(container).routes))
    scopes = {(r.path, tuple(sorted(r.methods))): set(conn_scopes(r.dependant)) for r in routes}
    with_conn = {route: s for route, s in scopes.items() if s}
    assert any(path.startswith("/join") for path, _ in with_conn)
    assert any(path.startswith("/v1") and "POST" in methods for path, methods in with_conn)
    assert {route: s for route, s in with_conn.items() if s != {"function"}} == {}
