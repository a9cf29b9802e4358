"""The public, embeddable sign-up page: ``GET/POST /join/<program>``.

What the ledger keeps for a web sign-up: the disclosure text exactly as rendered beside the checkbox (the
version id travels in the signed form token, so a disclosure changed between showing and submitting the
form cannot be misattributed), the page URL, when the form was shown and submitted, the IP, the user
agent and the referring page (the site that embeds the form). Then the SMS double opt-in follows.

Defences, none of which needs a third party: a signed double-submit token (itsdangerous, keyed with
OPTLINE_SECRET_KEY; the cookie is ``Partitioned`` and ``SameSite=None`` over HTTPS so the form also works
inside an iframe, and a browser that still withholds it must say the post is same-origin), an origin
check (``security.same_origin``, shared with the opt-out page), a honeypot field, a per-IP limit on posts (in this process) and on sign-ups started
(in the database, across processes), and one SMS prompt per number and window however often it is typed.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from markupsafe import Markup, escape

from optline.adapters.db import signups as signup_repo
from optline.bootstrap import Container
from optline.domain.consent import Channel, ConsentRefused
from optline.domain.disclosure import mask_phone
from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints.api.deps import ConnDep, ContainerDep
from optline.entrypoints.web.security import RateLimiter, same_origin
from optline.services import signup as signup_service
from optline.services.programs import get_program

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

COOKIE = "optline_join"
TOKEN_MAX_AGE = 2 * 3600  # a form left open longer is refused with a fresh one
POST_WINDOW_SECONDS = 600
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)]")


def linkify(text: str) -> Markup:
    """The disclosure with its links clickable; the visible text stays exactly the stored text."""
    out, last = [], 0
    for m in _URL.finditer(text):
        out.append(escape(text[last : m.start()]))
        url = escape(m.group(0))
        out.append(Markup(f'<a href="{url}" target="_blank" rel="noopener noreferrer">{url}</a>'))
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def _limiter(container: Container) -> RateLimiter:
    limiter = container.extras.get("join_post_limiter")
    if limiter is None:
        limiter = container.extras["join_post_limiter"] = RateLimiter(
            container.db, "join", container.settings.join_posts_per_ip, POST_WINDOW_SECONDS
        )
    return limiter


def _serializer(container: Container) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(container.secret_key(), salt="optline.join-form")


def _secure(container: Container) -> bool:
    return container.settings.public_url.startswith("https://")


def _page_url(container: Container, name: str) -> str:
    return f"{container.settings.public_url.rstrip('/')}/join/{quote(name, safe='')}"


def _render(
    request: Request,
    container: Container,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    program: dict[str, Any] | None = None,
    nonce: str | None = None,
) -> HTMLResponse:
    style_nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(
        request, f"join/{template}", {**context, "style_nonce": style_nonce}, status_code=status_code
    )
    ancestors = " ".join((program or {}).get("settings", {}).get("embed_origins") or []) or "*"
    # Self-contained: nothing loads from anywhere; only this page may be framed (by anyone, or by the
    # program's embed_origins).
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{style_nonce}'; img-src 'self' data:; form-action 'self'; "
        f"base-uri 'none'; frame-ancestors {ancestors}"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if nonce:
        attrs = "Path=/join; HttpOnly; Max-Age=7200"
        attrs += "; Secure; SameSite=None; Partitioned" if _secure(container) else "; SameSite=Lax"
        response.headers.append("Set-Cookie", f"{COOKIE}={nonce}; {attrs}")
    return response


def _form(
    request: Request,
    container: Container,
    program: dict[str, Any],
    version: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    phone: str = "",
    checked: bool = False,
    status_code: int = 200,
    embedded_in: str | None = None,
) -> HTMLResponse:
    nonce = request.cookies.get(COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{20,64}", nonce):
        nonce = secrets.token_urlsafe(24)
    claims: dict[str, Any] = {"p": program["id"], "v": version["id"], "n": nonce}
    shown_in = embedded_in or request.headers.get("referer")
    if shown_in and _origin_of(shown_in) not in _own_origins(request, container):
        claims["e"] = shown_in[:500]  # the page that embeds or links to the form: part of the evidence
    token = _serializer(container).dumps(claims)
    hours = signup_service.window(program).total_seconds() / 3600
    context = {
        "program": program, "disclosure": version["text"], "disclosure_html": linkify(version["text"]),
        "token": token, "errors": errors or {}, "phone": phone, "checked": checked, "hours": f"{hours:g}",
    }  # fmt: skip
    return _render(
        request, container, "form.html", context, status_code=status_code, program=program, nonce=nonce
    )


def _not_found(request: Request, container: Container, name: str) -> HTMLResponse:
    return _render(
        request,
        container,
        "message.html",
        {"title": "Sign-up not found", "text": f"There is no sign-up page named “{name}”."},
        status_code=404,
    )


@router.get("/join/{name}", response_class=HTMLResponse)
def join_form(name: str, request: Request, conn: ConnDep, container: ContainerDep) -> HTMLResponse:
    program = get_program(conn, name)
    if program is None:
        return _not_found(request, container, name)
    version = signup_service.current_disclosure(conn, container.clock, program)
    return _form(request, container, program, version)


@router.post("/join/{name}", response_class=HTMLResponse)
def join_submit(
    name: str,
    request: Request,
    conn: ConnDep,
    container: ContainerDep,
    phone: Annotated[str, Form()] = "",
    consent: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    website: Annotated[str, Form()] = "",  # the honeypot: hidden from people, filled by bots
) -> HTMLResponse:
    program = get_program(conn, name)
    if program is None:
        return _not_found(request, container, name)
    ip = request.client.host if request.client else "unknown"
    current = signup_service.current_disclosure(conn, container.clock, program)
    if _limiter(container).hit(ip, conn=conn) is not None:
        return _render(
            request,
            container,
            "message.html",
            {
                "title": "Too many attempts",
                "text": "Too many sign-up attempts from your network. Please try again in 10 minutes.",
            },
            status_code=429,
            program=program,
        )

    claims, shown_at, problem = _check_token(request, container, program, token)
    if problem:
        return _form(
            request, container, program, current, errors={"form": problem}, phone=phone, status_code=403
        )

    if website.strip():  # a bot: answer as if it worked, do nothing
        return _sent(request, container, program, phone)

    version = signup_repo.disclosure(conn, int(claims["v"])) or current
    errors: dict[str, str] = {}
    if not phone.strip():
        errors["phone"] = "Enter your mobile number, for example (415) 555-0134."
    if consent != "yes":
        errors["consent"] = "To sign up, check the box to agree to receive text messages."
    if not errors:
        limit = container.settings.join_signups_per_ip_per_hour
        since = container.clock.now().timestamp() - 3600
        recent = signup_repo.started_from_ip(conn, ip, datetime.fromtimestamp(since, UTC))
        if recent >= limit:
            return _render(
                request,
                container,
                "message.html",
                {
                    "title": "Too many sign-ups",
                    "text": "Too many sign-ups from your network in the last hour. Please try later.",
                },
                status_code=429,
                program=program,
            )
        evidence = {
            "ip": ip,
            "user_agent": request.headers.get("user-agent") or "(none sent by the browser)",
            "source_url": _page_url(container, program["name"]),
            "referer": request.headers.get("referer"),
            "shown_in": claims.get("e"),  # the embedding (or linking) page, when the browser told us
            "form_shown_at": shown_at.astimezone(UTC).isoformat() if shown_at else None,
            "submitted_at": container.clock.now().isoformat(),
            "consent_checkbox": "checked by the person (unchecked when shown)",
            "phone_as_typed": phone,
        }
        try:
            started = signup_service.start_for_phone(
                conn,
                container.clock,
                program=program,
                phone=phone,
                region=container.settings.default_region,
                channel=Channel.WEB,
                evidence=evidence,
                disclosure_version_id=version["id"],
                client_ip=ip,
            )
        except InvalidPhoneNumber as exc:
            errors["phone"] = f"Enter a valid mobile number, for example (415) 555-0134 ({exc})."
        except (ConsentRefused, signup_service.SignupError) as exc:
            errors["form"] = str(exc)
        else:
            return _sent(request, container, program, started.contact["phone"])
    return _form(
        request,
        container,
        program,
        version,
        errors=errors,
        phone=phone,
        checked=consent == "yes",
        status_code=400,
        embedded_in=claims.get("e"),
    )


def _check_token(
    request: Request, container: Container, program: dict[str, Any], token: str
) -> tuple[dict[str, Any], datetime | None, str | None]:
    """(claims, when the form was shown, problem). The form must come back from this page: a valid signed
    token for this program, posted from our own origin (Sec-Fetch-Site / Origin), and the double-submit
    cookie matching the token's nonce. When the cookie is missing — a browser that blocks cookies in an
    embedded frame — the browser's own ``Sec-Fetch-Site: same-origin`` stands in for it."""
    expired = "This form was open too long. Please check the box and submit it again."
    refused = "Your browser did not send the form back as we sent it. Please reload the page and try again."
    try:
        claims, shown_at = _serializer(container).loads(token, max_age=TOKEN_MAX_AGE, return_timestamp=True)
    except SignatureExpired:
        return {}, None, expired
    except BadSignature:
        return {}, None, refused
    if (
        not isinstance(claims, dict)
        or claims.get("p") != program["id"]
        or not same_origin(request, container.settings.public_url)
    ):
        return {}, None, refused
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and not secrets.compare_digest(cookie, str(claims.get("n", ""))):
        return {}, None, refused
    if cookie is None and request.headers.get("sec-fetch-site") != "same-origin":
        return {}, None, refused
    return claims, shown_at, None


def _own_origins(request: Request, container: Container) -> set[str]:
    return {_origin_of(str(request.base_url)), _origin_of(container.settings.public_url)}


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _sent(request: Request, container: Container, program: dict[str, Any], phone: str) -> HTMLResponse:
    """The same page whatever happened (pending, already pending or subscribed, honeypot): it must not tell
    a stranger whether a number is subscribed."""
    hours = signup_service.window(program).total_seconds() / 3600
    digits = re.sub(r"\D", "", phone)
    context = {
        "program": program,
        "masked": mask_phone(digits) if digits else "your phone",
        "hours": f"{hours:g}",
    }
    return _render(request, container, "sent.html", context, program=program)
