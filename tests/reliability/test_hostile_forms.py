"""Hostile input at the public pages that change consent (issue 13): the sign-up form (/join/<program>) and the
one-tap opt-out page (/u/<token>), by GET and POST, with hypothesis-generated path segments and form fields
(NUL and control characters, over-long values, invalid percent-escapes, huge numbers). Never a 5xx (a
person sees an error page instead of the form), and nothing recorded: none of these requests carries a valid
form token. On both engines (PostgreSQL refuses NUL in a query parameter).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.entrypoints.web.security import RateLimiter
from tests.reliability.test_hostile_webhooks import recorded
from tests.support import hostile, signing, web

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))

_SEGMENT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["deals", "deals\x00", "%00", "%ff%fe", "..%2f..%2fetc", "a" * 3000, "\u202e", "0" * 400]
    ),
)
_FIELD = st.one_of(
    st.text(max_size=30), st.sampled_from(["\x00", "+1415555\x000134", "9" * 500, "yes", "brand"])
)


@pytest.fixture
def settings(db_url: str) -> Settings:
    # No per-IP limits in the way: every example must reach the code under test.
    return Settings(
        env="test",
        database_url=db_url,
        public_url=hostile.BASE,
        join_posts_per_ip=10**6,
        join_signups_per_ip_per_hour=10**6,
        **signing.SETTINGS,
    )


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    prog = web.program(container, double_opt_in=True)
    web.subscriber(container, prog, hostile.PERSON)
    app = create_app(container)
    app.state.optout_limiter = RateLimiter(container.db, "optout", limit=10**6, window_seconds=60)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("page", ["/join/", "/u/"])
def test_hostile_requests_to_the_consent_pages_get_no_5xx_and_record_nothing(
    client: TestClient, container: Container, page: str
) -> None:
    before = recorded(container)

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        segment=_SEGMENT,
        raw=st.booleans(),
        post=st.booleans(),
        fields=st.dictionaries(
            st.sampled_from(["phone", "consent", "token", "website", "csrf", "scope"]), _FIELD
        ),
    )
    def check(segment: str, raw: bool, post: bool, fields: dict[str, str]) -> None:
        # Raw where a client could send it so (printable ASCII: "%00", "%ff" arrive as escapes), else quoted.
        plain = segment.isascii() and segment.isprintable() and not any(c in segment for c in "?# ")
        path = page + (segment if raw and plain else quote(segment, safe=""))
        headers = {"origin": hostile.BASE}
        if post:
            response = client.post(path, data=fields, headers=headers)
        else:
            response = client.get(path, headers=headers)
        assert response.status_code < 500, f"{path!r} {fields!r} -> {response.status_code}"
        assert recorded(container) == before, f"{path!r} {fields!r} -> {response.status_code}"

    check()
