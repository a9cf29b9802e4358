"""FastAPI dependencies: the container, a transaction per request, API-key authentication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Connection

from optline.adapters.db import api_keys
from optline.bootstrap import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def get_conn(container: ContainerDep) -> Iterator[Connection]:
    """One write transaction per request: committed when the route returns, rolled back if it raises."""
    with container.db.transaction() as conn:
        yield conn


# scope="function": FastAPI closes this dependency when the route function returns, *before* the response
# starts (fastapi/routing.py closes its function exit stack, then awaits the response). With the default
# scope the commit ran after the client already had its 201, and a failed commit went unnoticed (invariant 3).
# A commit that fails here raises before anything is sent: the client gets a 500, never a 2xx.
ConnDep = Annotated[Connection, Depends(get_conn, scope="function")]


def require_api_key(request: Request, container: ContainerDep, conn: ConnDep) -> str:
    # Uses the request's own transaction: a second write transaction here would wait on the first (SQLite).
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    name = api_keys.authenticate(conn, token.strip(), container.clock.now())
    if name is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return name


ApiKeyDep = Annotated[str, Depends(require_api_key)]
