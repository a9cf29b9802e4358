"""The pages: the public one-tap opt-out link and the operator dashboard (server-rendered, no JavaScript)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from optline.bootstrap import Container
from optline.entrypoints.web import (
    admin,
    auth,
    campaign_pages,
    dashboard,
    exports,
    hooks,
    import_pages,
    optout,
    simulator,
)
from optline.entrypoints.web.rendering import STATIC_DIR, render
from optline.entrypoints.web.security import FormSigner, RateLimiter, SecurityHeaders
from optline.services import users


def mount(app: FastAPI, container: Container) -> None:
    settings = container.settings
    secret = container.secret_key()
    # Built now, outside any request's transaction (it may read the database): endpoint registration seals
    # webhook secrets with it inside one.
    container.secret_box()
    app.state.optout_signer = FormSigner(
        secret, salt="optline.optout-form", max_age_seconds=optout.FORM_MAX_AGE
    )
    # Generous for a person tapping around, far too slow for anyone walking the token space.
    app.state.optout_limiter = RateLimiter(container.db, "optout", limit=30, window_seconds=60)
    app.state.login_limiter = RateLimiter(container.db, "login", limit=10, window_seconds=300)
    # Made now so that the first sign-in with an unknown name is not the one that pays for it (a timing tell).
    users.dummy_hash()

    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="optline_session",
        max_age=auth.SESSION_MAX_AGE,
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(optout.router)
    app.include_router(auth.router)
    app.include_router(dashboard.router)
    app.include_router(campaign_pages.router)
    app.include_router(exports.router)
    app.include_router(import_pages.router)
    app.include_router(admin.router)
    app.include_router(hooks.router)
    if settings.uses_simulator:  # development only: replies "from" anyone (Settings.uses_simulator)
        app.include_router(simulator.router)

    async def to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, auth.LoginRequired)
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    async def to_password(request: Request, exc: Exception) -> Response:
        return RedirectResponse(auth.PASSWORD_PATH, status_code=303)

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        return render(request, "csrf_failed.html", status_code=403)

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not request.url.path.startswith("/dashboard"):  # the API's clients read the JSON detail
            return await request_validation_exception_handler(request, exc)
        return Response(describe_invalid(exc), 422, media_type="text/plain; charset=utf-8")

    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(auth.LoginRequired, to_login)
    app.add_exception_handler(auth.PasswordChangeRequired, to_password)
    app.add_exception_handler(auth.CsrfFailed, csrf_failed)


_WHERE = {"path": "in the address", "query": "in the address's query", "body": "in the form"}


def describe_invalid(exc: RequestValidationError) -> str:
    """A dashboard request whose address or form does not fit (a hand-edited URL: ``/dashboard/imports/abc``,
    ``?after=-1``), in words: each parameter, where it is, what it must be and what it was."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where = _WHERE.get(loc[0], loc[0]) if loc else "in the request"
        name = ".".join(loc[1:]) or "value"
        given = repr(error.get("input"))
        given = given if len(given) <= 60 else given[:57] + "..."
        lines.append(f"{name} {where}: {error.get('msg', 'not valid')} (got {given})")
    return "The dashboard cannot read this request:\n" + "\n".join(lines) + "\n"
