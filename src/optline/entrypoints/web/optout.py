"""``/u/<token>``: the personal one-tap opt-out page. GET shows it; only the POST unsubscribes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from optline.bootstrap import Container
from optline.entrypoints.web.rendering import render
from optline.entrypoints.web.security import FormSigner, RateLimiter, client_ip, same_origin
from optline.services import web_optout

router = APIRouter(include_in_schema=False)

FORM_MAX_AGE = 24 * 3600  # a page left open over a day asks to be reloaded, not to guess


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _signer(request: Request) -> FormSigner:
    signer: FormSigner = request.app.state.optout_signer
    return signer


def _limited(request: Request) -> Response | None:
    limiter: RateLimiter = request.app.state.optout_limiter
    wait = limiter.hit(client_ip(request))
    if wait is None:
        return None
    response = render(request, "optout_limited.html", status_code=429)
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


@router.get("/u/{token:path}")  # any path under /u/ gets a friendly page, never a JSON 404
def optout_page(request: Request, token: str) -> Response:
    if (limited := _limited(request)) is not None:
        return limited
    with _container(request).db.read() as conn:
        page = web_optout.find(conn, token)
    if page is None:
        return render(request, "optout_unknown.html", status_code=404)
    return render(request, "optout.html", {"page": page, "csrf": _signer(request).sign(token)})


@router.post("/u/{token:path}")
def optout_submit(
    request: Request,
    token: str,
    csrf: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "program",
) -> Response:
    if (limited := _limited(request)) is not None:
        return limited
    container = _container(request)
    if not same_origin(request, container.settings.public_url) or not _signer(request).valid(csrf, token):
        return render(request, "optout_expired.html", {"token": token}, status_code=403)
    with container.db.transaction() as conn:
        result = web_optout.unsubscribe(
            conn,
            container.clock,
            token,
            all_brand=scope == "brand",
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", ""),
            url=str(request.url),
        )
    if result is None:
        return render(request, "optout_unknown.html", status_code=404)
    return render(request, "optout_done.html", {"result": result, "page": result.page})
