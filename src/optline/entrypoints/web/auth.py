"""Dashboard login, logout and password change; ``CurrentUser`` guards every dashboard page.

The cookie is Starlette's signed session (itsdangerous, the installation's secret key): it holds a session
token and the CSRF token, nothing else. The token is valid only while its ``user_sessions`` row exists
(services/users.py): signing out deletes the row, a password change deletes all of the user's rows, so a copy
of the cookie is refused from then on. Logging in replaces the whole session, so a token planted before
login is useless.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy import Connection
from starlette.responses import RedirectResponse, Response

from optline.bootstrap import Container
from optline.entrypoints.web.rendering import render
from optline.entrypoints.web.security import (
    RateLimiter,
    client_ip,
    same_origin,
    session_csrf_ok,
    session_csrf_token,
)
from optline.services import users

router = APIRouter(include_in_schema=False)
PASSWORD_PATH = "/account/password"
SESSION_MAX_AGE = 12 * 3600  # seconds: the cookie's lifetime and its session row's


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class PasswordChangeRequired(Exception):
    pass


class CsrfFailed(Exception):
    pass


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _load_user(request: Request) -> dict[str, Any] | None:
    token = request.session.get("sid")
    if not isinstance(token, str) or not token:
        return None
    container = container_of(request)
    with container.db.read() as conn:
        return users.session_user(conn, container.clock, token)


def _start_session(request: Request, conn: Connection, user_id: int) -> None:
    """A fresh session (and CSRF token) for this browser, recorded in the caller's transaction."""
    token = users.start_session(
        conn, container_of(request).clock, user_id, timedelta(seconds=SESSION_MAX_AGE)
    )
    request.session.clear()
    request.session.update(sid=token, csrf=secrets.token_urlsafe(24))


def current_user(request: Request) -> dict[str, Any]:
    user = _load_user(request)
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path if request.method == "GET" else "/dashboard")
    if user["must_change_password"] and request.url.path != PASSWORD_PATH:
        raise PasswordChangeRequired()
    return user


CurrentUser = Annotated[dict[str, Any], Depends(current_user)]


def require_csrf(request: Request, csrf: str) -> None:
    """Every dashboard form posts the session's token, from our own origin."""
    if not session_csrf_ok(request, csrf) or not same_origin(
        request, container_of(request).settings.public_url
    ):
        raise CsrfFailed()


def _safe_next(value: str | None) -> str:
    # Only local paths: "/x" yes, "//evil.example" or "https://…" no (open redirect).
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard"


@router.get("/login")
def login_page(request: Request, next: str = "/dashboard") -> Response:
    if _load_user(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", {"csrf": session_csrf_token(request), "next": _safe_next(next)})


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/dashboard",
) -> Response:
    limiter: RateLimiter = request.app.state.login_limiter
    context = {"next": _safe_next(next), "username": username}
    if limiter.hit(client_ip(request)) is not None:
        context["error"] = "Too many sign-in attempts. Wait a few minutes and try again."
        return render(request, "login.html", {**context, "csrf": session_csrf_token(request)}, 429)
    require_csrf(request, csrf)
    container = container_of(request)
    with container.db.transaction() as conn:
        user = users.authenticate(conn, container.clock, username, password)
        if user is not None:
            _start_session(request, conn, int(user["id"]))
    if user is None:
        context["error"] = "That username and password don't match."
        return render(request, "login.html", {**context, "csrf": session_csrf_token(request)}, 401)
    target = PASSWORD_PATH if user["must_change_password"] else _safe_next(next)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    require_csrf(request, csrf)
    token = request.session.get("sid")
    if isinstance(token, str) and token:  # ended on the server: a copy of this cookie is refused from now on
        with container_of(request).db.transaction() as conn:
            users.end_session(conn, token)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get(PASSWORD_PATH)
def password_page(request: Request, user: CurrentUser) -> Response:
    return render(request, "password.html", {"user": user, "csrf": session_csrf_token(request)})


@router.post(PASSWORD_PATH)
def change_password(
    request: Request,
    user: CurrentUser,
    current: Annotated[str, Form()] = "",
    new: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    error = None
    if new != confirm:
        error = "The two new passwords are not the same."
    else:
        try:
            with container_of(request).db.transaction() as conn:
                users.change_password(conn, int(user["id"]), current, new)  # ends every session of the user
                _start_session(request, conn, int(user["id"]))  # except the one of whoever changed it
        except users.UserError as exc:
            error = str(exc).capitalize() + "."
    if error:
        ctx = {"user": user, "csrf": session_csrf_token(request), "error": error}
        return render(request, "password.html", ctx, 400)
    return RedirectResponse("/dashboard?flash=password", status_code=303)
