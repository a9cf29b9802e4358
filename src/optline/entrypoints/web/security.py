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
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

# Pages load nothing from elsewhere and run no inline code (scripts only from /static; the campaign form's
# live preview fetches from the same origin). /docs keeps its own rules.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; font-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_NO_CSP_PREFIXES = ("/docs", "/redoc", "/openapi.json")


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    if "frame-ancestors" not in h.get("Content-Security-Policy", ""):  # a page with its own framing rule
        h.setdefault("X-Frame-Options", "DENY")  # (the embeddable /join form) keeps it; others are unframable
    # The opt-out token is in the URL: never leak it to another site through Referer.
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if not request.url.path.startswith(_NO_CSP_PREFIXES):
        h.setdefault("Content-Security-Policy", CSP)
    if request.url.scheme == "https":
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if response.headers.get("content-type", "").startswith("text/html"):
        h.setdefault("Cache-Control", "no-store")  # personal pages: no shared caches, no back-button leaks
    return response


class RateLimiter:
    """A sliding window of request times per key (client IP). In memory: per process.

    Several API processes behind a load balancer each keep their own window, so the effective limit is
    ``limit`` × processes; that still stops a single client from walking the token space.
    """

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit, self.window = limit, window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> float | None:
        """Count one request; None when allowed, else the seconds until the next one would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(0.0, hits[0] + self.window - now)
            hits.append(now)
            if len(self._hits) > 100_000:  # bounded memory under a flood of distinct addresses
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
            return None


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
