"""GET /metrics: Prometheus text format (adapters/metrics.py says what is counted where).

Protected: with ``OPTLINE_METRICS_TOKEN`` set, only a request bearing it (``Authorization: Bearer …``);
unset, only a client on the loopback interface (a Prometheus or an agent on the same machine). Behind a
reverse proxy on the same machine every client looks local: set the token there.
"""

from __future__ import annotations

import ipaddress
import os
import secrets

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from optline.adapters.metrics import DatabaseCollector
from optline.bootstrap import Container

router = APIRouter(tags=["operations"])


def _process_registry() -> CollectorRegistry:
    """This process's instruments, or every process's on this machine in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _database_registry(container: Container) -> CollectorRegistry:
    """One per container: its collector queries that container's database."""
    if "metrics_registry" not in container.extras:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DatabaseCollector(container.db, lambda: container.clock.now()))
        container.extras["metrics_registry"] = registry
    found: CollectorRegistry = container.extras["metrics_registry"]
    return found


def refusal(request: Request, container: Container) -> Response | None:
    """Why this request may not read the metrics (None: it may)."""
    token = container.settings.metrics_token
    expected = token.get_secret_value() if token is not None else ""
    if expected:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected.encode()):
            return None
        return PlainTextResponse(
            "unauthorized: send Authorization: Bearer <OPTLINE_METRICS_TOKEN>",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    host = request.client.host if request.client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return PlainTextResponse(
        "forbidden: /metrics answers only loopback clients while OPTLINE_METRICS_TOKEN is unset",
        status_code=403,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    container: Container = request.app.state.container
    refused = refusal(request, container)
    if refused is not None:
        return refused

    def render() -> bytes:  # the database queries block: off the event loop
        return generate_latest(_process_registry()) + generate_latest(_database_registry(container))

    return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)
