"""Signing out and changing the password end sessions on the server, not only in the browser that did it: a
copied session cookie is refused afterwards (both engines)."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import users

PASSWORD, NEW_PASSWORD = "correct-horse-battery", "staple-battery-horse"
COOKIE = "optline_session"


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


@pytest.fixture
def app(container: Container) -> FastAPI:
    with container.db.transaction() as conn:
        users.create(conn, container.clock, "maria", PASSWORD)
    return create_app(container)


def _signed_in(app: FastAPI) -> TestClient:
    client = TestClient(app)
    page = client.get("/login").text
    r = client.post(
        "/login",
        data={"username": "maria", "password": PASSWORD, "csrf": _csrf(page)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    return client


def _replay(app: FastAPI, cookie: str) -> TestClient:
    """Another browser (or an attacker) holding a copy of the cookie."""
    return TestClient(app, cookies={COOKIE: cookie})


def _opens_dashboard(client: TestClient) -> bool:
    r = client.get("/dashboard", follow_redirects=False)
    if r.status_code == 303:
        assert r.headers["location"].startswith("/login")
        return False
    assert r.status_code == 200, r.text
    return True


def test_a_copied_cookie_is_refused_after_sign_out(app: FastAPI) -> None:
    browser = _signed_in(app)
    copied = browser.cookies[COOKIE]
    assert _opens_dashboard(_replay(app, copied))

    csrf = _csrf(browser.get("/dashboard").text)
    assert browser.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303

    assert not _opens_dashboard(_replay(app, copied))
    assert (
        _replay(app, copied)
        .post("/dashboard/demo", data={"csrf": csrf}, follow_redirects=False)
        .headers["location"]
        .startswith("/login")
    )


def test_a_password_change_ends_every_other_session(app: FastAPI) -> None:
    laptop, phone = _signed_in(app), _signed_in(app)
    laptop_before = laptop.cookies[COOKIE]
    assert _opens_dashboard(phone)

    form = laptop.get("/account/password").text
    r = laptop.post(
        "/account/password",
        data={"csrf": _csrf(form), "current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard?flash=password", r.text

    assert not _opens_dashboard(phone)  # the other session, signed in with the old password
    assert not _opens_dashboard(_replay(app, laptop_before))  # a copy of the laptop's old cookie
    assert _opens_dashboard(laptop)  # whoever changed it stays signed in, with a new session


def test_a_failed_password_change_ends_nothing(app: FastAPI) -> None:
    laptop, phone = _signed_in(app), _signed_in(app)
    form = laptop.get("/account/password").text
    r = laptop.post(
        "/account/password",
        data={"csrf": _csrf(form), "current": "wrong-password", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert r.status_code == 400
    assert _opens_dashboard(phone) and _opens_dashboard(laptop)
