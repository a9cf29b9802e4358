"""The FastAPI application factory. No module-level app: ``create_app`` builds one per container."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import optline
from optline.adapters.db.database import head_revision, schema_revision
from optline.adapters.db.group_commit import GroupCommit
from optline.bootstrap import Container
from optline.entrypoints import web
from optline.entrypoints.api import campaigns as campaigns_api
from optline.entrypoints.api import contacts, programs
from optline.entrypoints.api import event_hooks as event_hooks_api
from optline.entrypoints.api import metrics as metrics_api
from optline.entrypoints.api import reports as reports_api
from optline.entrypoints.api import signups as signups_api
from optline.entrypoints.api import webhooks as webhooks_api
from optline.entrypoints.api.webhook_lane import WebhookLane
from optline.entrypoints.body_limit import BodyLimitMiddleware, limits
from optline.entrypoints.web import join as join_web
from optline.logs import RequestIdMiddleware

DOCS_ASSETS = "/docs/assets"


def mount_docs(app: FastAPI) -> None:
    """Swagger UI from the ``swagger-ui-bundle`` package (pinned in pyproject.toml), never from a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from starlette.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="optline API",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


class App(FastAPI):
    """The application, with a short path for provider webhooks.

    A burst of STOPs went through every layer the pages and the API need (sessions, security headers,
    FastAPI's exception and exit-stack layers), a tenth of each webhook's CPU for nothing: a webhook has no
    session, answers XML or JSON to a provider, and handles its own errors. Requests under /webhooks/ keep
    what protects and records them — the request id and access log, the body limit, the signature check
    (in the route) and a 500 for anything unexpected, in one layer (webhook_lane.py) — and skip the rest."""

    webhook_lane: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.webhook_lane is not None
            and scope["type"] == "http"
            and scope["path"].startswith("/webhooks/")
        ):
            scope["app"] = self  # request.app, as Starlette sets it
            await self.webhook_lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(container: Container) -> FastAPI:
    app = App(
        title="optline",
        version=optline.__version__,
        description="SMS campaigns built around consent",
        docs_url=None,
        redoc_url=None,  # served below from local, pinned assets: /docs works offline
        # optline's metrics are Prometheus (/metrics); FastAPI's OpenTelemetry bridge asked on every request
        # whether a provider had been configured, a tenth of a webhook's time in the event loop.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    app.state.group_commit = GroupCommit(container.db)  # the webhooks' writes (adapters/db/group_commit.py)
    mount_docs(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        from sqlalchemy import text

        try:
            with container.db.read() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # report, don't crash: this is what a load balancer polls
            return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Ready to take traffic: the database answers *and* its schema is the one this code expects
        (a new release started before `optline init` ran is alive but not ready)."""
        try:
            current = schema_revision(container.db.engine)
        except Exception as exc:
            return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
        expected = head_revision()
        if current != expected:
            return JSONResponse(
                {"status": "not migrated", "schema": current, "expected": expected}, status_code=503
            )
        return JSONResponse({"status": "ready", "schema": current})

    # First: routes are matched in order, and a burst of provider webhooks should not be tried against every
    # API and page route before its own.
    app.router.routes.extend(webhooks_api.routes)
    if container.settings.uses_simulator:
        app.router.routes.extend(webhooks_api.simulator_routes)
    app.include_router(programs.router)
    app.include_router(contacts.router)
    app.include_router(signups_api.router)
    app.include_router(join_web.router)
    app.include_router(campaigns_api.router)
    app.include_router(reports_api.router)
    app.include_router(event_hooks_api.router)
    app.include_router(metrics_api.router)
    web.mount(app, container)
    app.add_exception_handler(StarletteHTTPException, unreadable_body)
    s = container.settings
    app.add_middleware(BodyLimitMiddleware, limit_for=limits(s.max_body_bytes, s.max_upload_bytes))
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so every log line has the id
    hooks = [
        *webhooks_api.routes,
        *(webhooks_api.simulator_routes if container.settings.uses_simulator else []),
    ]
    app.webhook_lane = WebhookLane(hooks, limit_for=limits(s.max_body_bytes, s.max_upload_bytes))
    return app


async def unreadable_body(request: Request, exc: Exception) -> Response:
    """FastAPI answers a JSON body that is not UTF-8 with "There was an error parsing the body", which names
    nothing; this says which byte, where. Every other HTTPException is answered as FastAPI does."""
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start]
        return JSONResponse(
            {
                "detail": f"the body is not UTF-8: byte 0x{byte:02x} at offset {cause.start}; send JSON in UTF-8"
            },
            status_code=400,
        )
    return await http_exception_handler(request, exc)
