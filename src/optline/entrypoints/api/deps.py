"""FastAPI dependencies: the container, a transaction per request, API-key authentication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Connection

from optline.adapters.db import api_keys
from optline.bootstrap import Container
from optline.entrypoints.api.schemas import Problem


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
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    name = api_keys.authenticate(conn, token.strip(), container.clock.now())
    if name is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


ApiKeyDep = Annotated[str, Depends(require_api_key)]


# The error answers every /v1 route may give, documented in the OpenAPI schema (each router's ``responses``)
# with the body they carry: a client (and the schemathesis suite) knows every status it can get.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "unreadable request (e.g. a Content-Length that is not a number)"},
    401: {"model": Problem, "description": "missing, invalid or revoked API key"},
    404: {"model": Problem, "description": "no such resource (the detail names it)"},
    409: {"model": Problem, "description": "conflicts with the resource's state or an existing one"},
    413: {"model": Problem, "description": "request body over OPTLINE_MAX_BODY_BYTES"},
    422: {"model": Problem, "description": "invalid request: the detail names the field and the rule"},
}
