"""Security for the pages: response headers, per-IP rate limits, CSRF tokens and same-origin checks.

Two CSRF schemes, chosen by who is on the other end:
- The dashboard has a login session: a random token lives in the (signed) session cookie and every form
  carries it back.
- The opt-out page has no session and must not need cookies (a person on a locked-down phone still has to
  be able to leave): its form carries a token signed with OPTLINE_SECRET_KEY and bound to the link token,
  and the POST must come from our own origin when the browser says where it came from.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from optline.adapters.db import rate_limits
from optline.adapters.db.database import Database

# Pages load nothing from elsewhere and run no inline code (scripts only from /static; the campaign form's
# live preview fetches from the same origin). /docs keeps its own rules.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; font-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_NO_CSP_PREFIXES = ("/docs", "/redoc", "/openapi.json")


class SecurityHeaders:
    """The response headers every page and API answer gets. A plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` (``app.middleware("http")``) runs each request through an extra task and stream,
    which cost a webhook burst a measurable share of its throughput (bench/inbound.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_security_headers(MutableHeaders(scope=message), path, https)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_security_headers(h: MutableHeaders, path: str, https: bool) -> None:
    h.setdefault("X-Content-Type-Options", "nosniff")
    if "frame-ancestors" not in h.get("Content-Security-Policy", ""):  # a page with its own framing rule
        h.setdefault("X-Frame-Options", "DENY")  # (the embeddable /join form) keeps it; others are unframable
    # The opt-out token is in the URL: never leak it to another site through Referer.
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if not path.startswith(_NO_CSP_PREFIXES):
        h.setdefault("Content-Security-Policy", CSP)
    if https:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if h.get("content-type", "").startswith("text/html"):
        h.setdefault("Cache-Control", "no-store")  # personal pages: no shared caches, no back-button leaks


class RateLimiter:
    """A sliding window of request times per key (client IP), kept in the database
    (adapters/db/rate_limits.py): every process of the installation counts against the same window, so
    ``serve --workers N`` does not multiply the limit by N."""

    def __init__(self, db: Database, bucket: str, limit: int, window_seconds: float) -> None:
        self.db, self.bucket, self.limit, self.window = db, bucket, limit, window_seconds

    def hit(self, key: str, now: float | None = None, conn: Connection | None = None) -> float | None:
        """Count one request; None when allowed, else the seconds until the next one would be.
        ``conn``: the request's own write transaction, when it has one (a second one would wait on it)."""
        now = time.time() if now is None else now
        if conn is not None:
            return rate_limits.hit(conn, self.bucket, key, limit=self.limit, window=self.window, now=now)
        with self.db.transaction() as own:
            return rate_limits.hit(own, self.bucket, key, limit=self.limit, window=self.window, now=now)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_origin(request: Request, public_url: str) -> bool:
    """False when the browser says the request came from another site (Sec-Fetch-Site or Origin).

    Browsers that send neither (old ones, some privacy tools) are let through: the form token still has to
    be valid, and it is only ever rendered into our own pages.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":  # opaque origin: trust only the browser's own same-origin statement
        return site == "same-origin"
    allowed = {_origin_of(str(request.base_url)), _origin_of(public_url)}
    return _origin_of(origin) in allowed


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def session_csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def session_csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not expected or not isinstance(submitted, str):
        return False
    return secrets.compare_digest(expected.encode(), submitted.encode())


class FormSigner:
    """Signed, expiring form tokens bound to one value (the opt-out link's token)."""

    def __init__(self, secret: str, salt: str, max_age_seconds: int) -> None:
        self._s = URLSafeTimedSerializer(secret, salt=salt)
        self.max_age = max_age_seconds

    def sign(self, bound_to: str) -> str:
        return self._s.dumps(bound_to)

    def valid(self, token: object, bound_to: str) -> bool:
        if not isinstance(token, str):
            return False
        try:
            return bool(self._s.loads(token, max_age=self.max_age) == bound_to)
        except BadSignature:
            return False
