"""The opt-out link over HTTP, on both engines: GET reads only, the POST needs its signed form token and our
own origin, the ledger keeps the web evidence, unknown tokens get the friendly page, requests are limited."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.db.tables import consent_events, subscriptions
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import web_optout
from tests.support import web


@pytest.fixture
def client(container: Container) -> TestClient:
    return TestClient(create_app(container))


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _ledger(container: Container, contact_id: int) -> tuple[dict[int, str], int]:
    with container.db.read() as conn:
        statuses = dict(
            conn.execute(
                select(subscriptions.c.program_id, subscriptions.c.status).where(
                    subscriptions.c.contact_id == contact_id
                )
            ).all()
        )
        n = conn.execute(
            select(func.count()).select_from(consent_events).where(consent_events.c.contact_id == contact_id)
        ).scalar_one()
    return statuses, int(n)


def _setup(
    container: Container, scope: str = "program"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    prog = web.program(container, optout_scope=scope)
    person = web.subscriber(container, prog)
    return prog, person, web.message_with_link(container, prog, person)


def test_get_shows_the_page_and_changes_nothing(container: Container, client: TestClient) -> None:
    _prog, person, msg = _setup(container)
    before = _ledger(container, person["id"])
    for _ in range(3):
        r = client.get(f"/u/{msg['optout_token']}")
        assert r.status_code == 200
    assert "Acme Coffee" in r.text and "Unsubscribe" in r.text and "0134" in r.text
    assert "+14155550134" not in r.text  # the full number is not on a page anyone with the link can open
    assert _ledger(container, person["id"]) == before
    h = r.headers
    assert "default-src 'none'" in h["content-security-policy"] and h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "same-origin" and h["cache-control"] == "no-store"
    assert "set-cookie" not in h  # the page works without cookies and leaves none behind
    assert "<script" not in r.text and "http" not in r.text.split("<body>")[1].replace(
        "http://testserver", ""
    )


def test_post_unsubscribes_this_program_with_web_evidence(container: Container, client: TestClient) -> None:
    prog, person, msg = _setup(container)
    other = web.program(container, name="news")
    web.subscriber(container, other)  # same person, second program of the brand
    page = client.get(f"/u/{msg['optout_token']}")
    r = client.post(
        f"/u/{msg['optout_token']}",
        data={"csrf": _csrf(page.text), "scope": "program"},
        headers={"user-agent": "TestPhone/1.0", "origin": "http://testserver"},
    )
    assert r.status_code == 200 and "You're unsubscribed" in r.text
    statuses, events = _ledger(container, person["id"])
    assert statuses == {prog["id"]: "unsubscribed", other["id"]: "subscribed"}
    with container.db.read() as conn:
        event = conn.execute(select(consent_events).order_by(consent_events.c.id.desc()).limit(1)).one()
    assert (event.action, event.channel, event.program_id) == ("opt_out", "web", prog["id"])
    assert event.evidence["user_agent"] == "TestPhone/1.0" and event.evidence["ip"] == "testclient"
    assert event.evidence["message_id"] == msg["id"]
    assert event.evidence["url"] == f"http://testserver/u/{msg['optout_token']}"
    assert event.evidence["page_text"].startswith("Stop deals text messages from Acme Coffee.")
    # Tapping again (a double tap, the back button) records nothing more.
    again = client.post(f"/u/{msg['optout_token']}", data={"csrf": _csrf(page.text), "scope": "program"})
    assert again.status_code == 200
    assert _ledger(container, person["id"]) == (statuses, events)


def test_all_messages_from_the_brand(container: Container, client: TestClient) -> None:
    _prog, person, msg = _setup(container)
    other = web.program(container, name="news")
    web.subscriber(container, other)
    page = client.get(f"/u/{msg['optout_token']}")
    client.post(f"/u/{msg['optout_token']}", data={"csrf": _csrf(page.text), "scope": "brand"})
    statuses, _ = _ledger(container, person["id"])
    assert set(statuses.values()) == {"unsubscribed"}


def test_post_without_a_valid_form_token_or_from_another_site_changes_nothing(
    container: Container, client: TestClient
) -> None:
    prog, person, msg = _setup(container)
    token = msg["optout_token"]
    before = _ledger(container, person["id"])
    good = _csrf(client.get(f"/u/{token}").text)
    other = web.message_with_link(container, prog, person)["optout_token"]
    attempts = [
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": _csrf(client.get(f"/u/{other}").text)}, {}),  # a token signed for another link
        ({"csrf": good}, {"origin": "https://evil.example"}),
        ({"csrf": good}, {"sec-fetch-site": "cross-site"}),
        ({"csrf": good}, {"origin": "null"}),
    ]
    for data, headers in attempts:
        r = client.post(f"/u/{token}", data=data, headers=headers)
        assert r.status_code == 403 and "nothing was changed" in r.text, (data, headers)
    assert _ledger(container, person["id"]) == before
    ok = client.post(
        f"/u/{token}", data={"csrf": good}, headers={"origin": "null", "sec-fetch-site": "same-origin"}
    )
    assert ok.status_code == 200 and "You're unsubscribed" in ok.text


@pytest.mark.parametrize("token", ["abc", "0000000000", "ZZZZZZZZZZ", "a" * 200, "..%2F..%2Fetc"])
def test_unknown_or_malformed_token_gets_the_friendly_page(client: TestClient, token: str) -> None:
    for r in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data={"csrf": "x"})):
        assert r.status_code in (403, 404)
        assert "STOP" in r.text and "Traceback" not in r.text


def test_requests_are_rate_limited_per_ip(container: Container, client: TestClient) -> None:
    statuses = [client.get("/u/aaaaaaaaaa").status_code for _ in range(35)]
    assert statuses[:30] == [404] * 30 and statuses[30:] == [429] * 5
    r = client.get("/u/aaaaaaaaaa")
    assert int(r.headers["retry-after"]) >= 1 and "Too many tries" in r.text


def test_find_reads_only_and_masks_the_number(container: Container) -> None:
    _prog, _person, msg = _setup(container, scope="brand")
    with container.db.read() as conn:
        page = web_optout.find(conn, msg["optout_token"])
        assert web_optout.find(conn, "aaaaaaaaaa") is None
    assert page is not None and page.brand_wide_by_policy and not page.already_out
    assert page.masked_phone.endswith("0134") and "415" not in page.masked_phone
    assert page.stop_text() == "Stop all text messages from Acme Coffee."
