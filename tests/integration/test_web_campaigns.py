"""Campaigns from the dashboard, over the ASGI app on both engines: the live preview, send now through the
simulator to "delivered", scheduling in the operator's zone, pause/resume/cancel, and CSRF on every form."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db.tables import campaigns, messages
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.entrypoints.worker import run
from tests.support import outbound, web


@pytest.fixture
def client(container: Container) -> TestClient:
    return web.signed_in(container)


@pytest.fixture
def program(container: Container) -> dict[str, object]:
    prog, ids = outbound.seed(container, 5)
    with container.db.transaction() as conn:  # one person who left: an exclusion reason in the dry run
        outbound.opt_out(conn, container.clock, prog, ids[0])
    return prog


def _form(client: TestClient) -> str:
    return web.csrf(client.get("/dashboard/campaigns/new").text)


def test_preview_shows_the_text_as_sent_segments_lint_and_the_audience(
    client: TestClient, program: dict[str, object]
) -> None:
    csrf = _form(client)
    r = client.post(
        "/dashboard/campaigns/preview",
        data={
            "csrf": csrf,
            "program_id": str(program["id"]),
            "template": "Hi {{ first_name }} — 20% off at bit.ly/x",
            "filters": "",
        },
    )
    assert r.status_code == 200
    text = web.page_text(r.text)
    # The recipient's view: the brand prefix and the opt-out instruction that compose adds, a real first name.
    # The personal link, as long as the one sent (public URL + a token of the real length).
    assert (
        "Acme: Hi P1 — 20% off at bit.ly/x. Reply STOP to opt out or tap http://testserver/u/AbCdEfGhJk"
        in text
    )
    assert "UCS-2" in text and "— (U+2014)" in text  # the character that forces UCS-2, named
    assert "public link shortener bit.ly" in text  # lint, inline (an error: it blocks sending)
    assert "4 recipients" in text and "1 excluded: opted out" in text  # the dry run and its reasons
    bad = client.post(
        "/dashboard/campaigns/preview",
        data={
            "csrf": csrf,
            "program_id": str(program["id"]),
            "template": "Hi",
            "filters": "tier=gold",
        },
    )
    assert "unknown audience filter key 'tier'" in web.page_text(bad.text)
    nonsense = client.post(
        "/dashboard/campaigns/preview",
        data={
            "csrf": csrf,
            "program_id": str(program["id"]),
            "template": "Hi",
            "filters": "tier",
        },
    )
    assert "use key=value" in web.page_text(nonsense.text)


def test_send_now_reaches_delivered_through_the_simulator(
    container: Container, client: TestClient, program: dict[str, object]
) -> None:
    r = client.post(
        "/dashboard/campaigns/new",
        data={
            "csrf": _form(client),
            "program_id": str(program["id"]),
            "name": "spring",
            "message_type": "marketing",
            "template": "Hi {{ first_name }}, spring sale today",
            "intent": "send",
            "tz": "UTC",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, web.page_text(r.text)
    page = client.get(r.headers["location"])
    assert "Sending" in web.page_text(page.text) and 'data-testid="funnel-queued">4<' in page.text
    run(container, threading.Event(), once=True)  # the worker, with the simulator's delivery receipts
    page = client.get(r.headers["location"])
    text = web.page_text(page.text)
    assert 'data-testid="funnel-delivered">4<' in page.text, text
    assert 'data-testid="campaign-status">done<' in page.text
    # Each message names the consent that authorised it (the import opt-in in the ledger).
    with container.db.read() as conn:
        rows = conn.execute(select(messages.c.status, messages.c.consent_event_id)).all()
    assert {s for s, _ in rows} == {"delivered"} and all(cid for _, cid in rows)
    assert text.count("opt in via import") == 4 and f"consent event #{rows[0][1]}" in text
    assert "Acme: Hi P1, spring sale today. Reply STOP to opt out or tap http://testserver/u/" in text
    listing = web.page_text(client.get("/dashboard/campaigns").text)
    assert "spring" in listing


def test_lint_errors_block_the_send_and_keep_the_form(client: TestClient, program: dict[str, object]) -> None:
    r = client.post(
        "/dashboard/campaigns/new",
        data={
            "csrf": _form(client),
            "program_id": str(program["id"]),
            "name": "short",
            "template": "See bit.ly/x",
            "intent": "send",
        },
    )
    assert r.status_code == 400
    assert "lint errors block sending" in web.page_text(r.text) and "See bit.ly/x</textarea>" in r.text
    assert "short" not in web.page_text(client.get("/dashboard/campaigns").text)  # nothing saved


def test_schedule_in_the_operators_zone_shown_in_utc_too(
    container: Container, client: TestClient, program: dict[str, object]
) -> None:
    r = client.post(
        "/dashboard/campaigns/new",
        data={
            "csrf": _form(client),
            "program_id": str(program["id"]),
            "name": "later",
            "template": "Acme news",
            "intent": "schedule",
            "at": "2026-12-01T10:00",
            "tz": "America/New_York",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, web.page_text(r.text)
    with container.db.read() as conn:
        row = conn.execute(select(campaigns).where(campaigns.c.name == "later")).one()
        not_before = {m.not_before for m in conn.execute(select(messages.c.not_before))}
    assert row.scheduled_at.replace(tzinfo=UTC) == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert {n.replace(tzinfo=UTC) for n in not_before} == {datetime(2026, 12, 1, 15, 0, tzinfo=UTC)}
    assert "2026-12-01 10:00 EST (2026-12-01 15:00 UTC)" in web.page_text(
        client.get(r.headers["location"]).text
    )
    bad = client.post(
        "/dashboard/campaigns/new",
        data={
            "csrf": _form(client),
            "program_id": str(program["id"]),
            "name": "bad",
            "template": "Acme news",
            "intent": "schedule",
            "at": "next tuesday",
            "tz": "UTC",
        },
    )
    assert bad.status_code == 400 and "unrecognised time 'next tuesday'" in web.page_text(bad.text)


def test_draft_pause_resume_cancel_and_csrf(
    container: Container, client: TestClient, program: dict[str, object]
) -> None:
    r = client.post(
        "/dashboard/campaigns/new",
        data={
            "csrf": _form(client),
            "program_id": str(program["id"]),
            "name": "flow",
            "template": "Acme news",
            "intent": "draft",
        },
        follow_redirects=False,
    )
    url = r.headers["location"].split("?")[0]
    csrf = web.csrf(client.get(url).text)
    assert client.post(url, data={"action": "send"}).status_code == 403  # no token: refused
    assert client.post(url, data={"action": "send", "csrf": "forged"}).status_code == 403

    def act(action: str) -> str:
        resp = client.post(url, data={"action": action, "csrf": csrf}, follow_redirects=False)
        assert resp.status_code in (303, 409), resp.text
        with container.db.read() as conn:
            return str(
                conn.execute(select(campaigns.c.status).where(campaigns.c.name == "flow")).scalar_one()
            )

    assert act("resume") == "draft"  # a draft does not resume: refused with the service's reason
    refused = client.post(url, data={"action": "resume", "csrf": csrf})
    assert refused.status_code == 409 and "only a paused campaign resumes" in web.page_text(refused.text)
    assert act("send") == "sending"
    assert act("pause") == "paused"
    assert act("resume") == "sending"
    assert act("cancel") == "cancelled"
    with container.db.read() as conn:
        assert {s for (s,) in conn.execute(select(messages.c.status))} == {"cancelled"}
    assert client.get("/dashboard/campaigns/999999").status_code == 404


def test_campaign_pages_need_a_session(container: Container) -> None:
    anonymous = TestClient(create_app(container))
    for path in ("/dashboard/campaigns/new", "/dashboard/campaigns/1"):
        r = anonymous.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = anonymous.post("/dashboard/campaigns/preview", data={"template": "x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
