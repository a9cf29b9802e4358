"""The one-tap opt-out link in a real browser, against a real ``optline serve``: a GET changes nothing, the
Unsubscribe tap opts the person out with web evidence, a tampered link gets the friendly page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import consent_events, subscriptions
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.domain.optout_links import optout_url
from tests.support import web
from tests.support.server import ARTIFACTS, PHONE, PageWatch, accessibility_problems, launch, serve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _state(c: Container, contact_id: int) -> tuple[set[str], int]:
    with c.db.read() as conn:
        statuses = set(
            conn.execute(
                select(subscriptions.c.status).where(subscriptions.c.contact_id == contact_id)
            ).scalars()
        )
        events = conn.execute(
            select(func.count()).select_from(consent_events).where(consent_events.c.contact_id == contact_id)
        ).scalar_one()
    return statuses, int(events)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_tap_unsubscribe_on_a_phone(browser: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    setup = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    deals = web.program(setup, optout_scope="program")
    web.program(setup, name="news")  # a second program of the same brand
    person = web.subscriber(setup, deals)
    with setup.db.transaction() as conn:  # subscribed to news too
        from optline.domain.consent import Action, Channel
        from optline.services import consent, programs

        consent.record(
            conn, setup.clock, contact_id=person["id"], program=programs.require_program(conn, "news"),
            action=Action.OPT_IN, channel=Channel.API, evidence={"source": "test", "disclosure_text": "STOP to end"},
        )  # fmt: skip
    message = web.message_with_link(setup, deals, person)

    with serve(db_url) as server:
        link = optout_url(server.url, message["optout_token"])
        context = browser.new_context(**PHONE)
        page = context.new_page()
        watch = PageWatch(page)

        before = _state(setup, person["id"])
        page.goto(link)
        assert page.locator("h1").inner_text() == "Unsubscribe from text messages"
        assert "Acme Coffee" in page.inner_text("main")
        page.reload()  # link previews and scanners fetch GETs: any number of them changes nothing
        assert _state(setup, person["id"]) == before == ({"subscribed"}, 2)
        assert accessibility_problems(page) == []
        _shot(page, "optout-page-phone")
        watch.check("opt-out page")

        page.get_by_label("All messages from Acme Coffee").check()
        with page.expect_navigation():
            page.get_by_role("button", name="Unsubscribe").click()
        assert page.locator("h1").inner_text() == "You're unsubscribed"
        assert "any more text messages from Acme Coffee" in page.inner_text("main")
        assert "Text START to (415) 555-0100" in page.inner_text("main")
        assert accessibility_problems(page) == []
        _shot(page, "optout-done-phone")
        watch.check("opt-out confirmation")

        statuses, events = _state(setup, person["id"])
        assert statuses == {"unsubscribed"} and events == 3
        with setup.db.read() as conn:
            event = conn.execute(select(consent_events).order_by(consent_events.c.id.desc()).limit(1)).one()
        assert (event.action, event.channel, event.program_id) == ("opt_out", "web", None)  # brand-wide
        ev = event.evidence
        assert ev["ip"] == "127.0.0.1" and "Chrome" in ev["user_agent"] and ev["message_id"] == message["id"]
        assert ev["url"] == link and "Chosen: All messages from Acme Coffee" in ev["page_text"]

        page.goto(link)  # coming back later: already done, nothing to tap
        assert page.locator("h1").inner_text() == "You're already unsubscribed"
        assert page.locator("button").count() == 0
        watch.check("revisit")

        token = message["optout_token"]
        tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
        for bad in (tampered, "nonsense", token + "x", "%3Cscript%3E"):
            response = page.goto(f"{server.url}/u/{bad}")
            assert response is not None and response.status == 404
            assert page.locator("h1").inner_text() == "We couldn't find this link"
            assert "Reply STOP" in page.inner_text("main")
            assert "Traceback" not in page.content()
        _shot(page, "optout-unknown-phone")
        assert _state(setup, person["id"]) == (statuses, events)
        context.close()
    setup.close()


def test_optout_page_on_desktop_without_javascript(browser: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    setup = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    prog = web.program(setup)  # brand-wide opt-out policy: no choice to make
    person = web.subscriber(setup, prog)
    message = web.message_with_link(setup, prog, person)
    with serve(db_url) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=False)
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(optout_url(server.url, message["optout_token"]))
        assert page.locator("input[type=radio]").count() == 0
        assert "Stop all text messages from Acme Coffee." in page.inner_text("main")
        _shot(page, "optout-page-desktop")
        page.keyboard.press("Tab")  # reachable by keyboard
        assert page.evaluate("document.activeElement.textContent") == "Unsubscribe"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("h1").inner_text() == "You're unsubscribed"
        _shot(page, "optout-done-desktop")
        watch.check("desktop without JavaScript")
        context.close()
    assert _state(setup, person["id"])[0] == {"unsubscribed"}
    setup.close()
