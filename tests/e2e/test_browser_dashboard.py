"""The dashboard in a real browser: first-run admin, password change, empty state, demo data, every page on
a phone and a desktop, the review queue's one-click decisions. Any console error or failed request fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.db.database import Database, make_engine
from optline.adapters.db.tables import consent_events, contacts, inbound_messages, subscriptions
from tests.support.server import ARTIFACTS, DESKTOP, PHONE, PageWatch, accessibility_problems, launch, serve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

PAGES = [
    ("overview", "/dashboard", "Overview"),
    ("programs", "/dashboard/programs", "Programs"),
    ("campaigns", "/dashboard/campaigns", "Campaigns"),
    ("contacts", "/dashboard/contacts", "Contacts"),
    ("imports", "/dashboard/imports", "Imports"),
    ("review", "/dashboard/review", "Review queue"),
    ("list-review", "/dashboard/list-review", "List review"),
    ("simulator", "/dashboard/simulator", "SMS simulator"),
]
NEW_PASSWORD = "a-long-new-password-1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_first_run_login_demo_and_every_page(browser: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    with serve(db_url) as server:
        password = server.first_run_password()
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        watch = PageWatch(page)

        page.goto(server.url + "/dashboard/campaigns")
        assert "/login" in page.url  # the dashboard needs a session
        _shot(page, "dashboard-login-desktop")
        page.fill("#username", "admin")
        page.fill("#password", "wrong password")
        page.click("button[type=submit]")
        assert "don't match" in page.inner_text("main")
        watch.clear()  # the 401 of a wrong password is expected
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("button[type=submit]")

        page.wait_for_url("**/account/password")  # the one-time password must be replaced first
        _shot(page, "dashboard-password-desktop")
        page.fill("#current", password)
        page.fill("#new", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard?flash=password")
        assert "Welcome to optline" in page.inner_text("main")  # empty database: the guide
        _shot(page, "dashboard-welcome-desktop")
        watch.check("welcome")

        page.click("text=Load demo data")
        page.wait_for_url("**/dashboard?flash=demo")
        assert "Demo data loaded" in page.inner_text("main")
        assert page.locator("svg.chart.wide rect.bar").count() == 30  # one bar per day
        watch.check("demo")

        for key, path, heading in PAGES:
            page.goto(server.url + path)
            assert page.locator("h1").inner_text() == heading
            assert accessibility_problems(page) == [], path
            _shot(page, f"dashboard-{key}-desktop")
            watch.check(path)

        # The list review, run from the dashboard.
        page.goto(server.url + "/dashboard/list-review")
        with page.expect_navigation():
            page.click("text=Run the review now")
        assert "List review finished" in page.inner_text("main") and "Checked" in page.inner_text("main")
        assert accessibility_problems(page) == []
        _shot(page, "dashboard-list-review-run-desktop")
        watch.check("list review run")

        # Contact lookup: someone who opted out, with their ledger timeline and messages.
        engine = make_engine(db_url)
        with Database(engine).read() as conn:
            opted_out = conn.execute(
                select(inbound_messages.c.from_phone).where(inbound_messages.c.intent == "optout").limit(1)
            ).scalar_one()
        page.goto(server.url + "/dashboard/contacts")
        page.fill("#phone", opted_out)
        page.click("form.search button")
        main = page.inner_text("main").lower()
        assert "unsubscribed" in main and "opt out" in main and "received" in main
        _shot(page, "dashboard-contact-desktop")
        watch.check("contact lookup")

        # The review queue: one click each way; both land in the ledger under the operator's name.
        page.goto(server.url + "/dashboard/review")
        items = page.locator("li.review-item")
        before = items.count()
        assert before >= 2
        page.locator("li.review-item").first.locator("button[value=opt_out]").click()
        page.wait_for_url("**/dashboard/review?flash=decided")
        page.locator("li.review-item").first.locator("button[value=not_opt_out]").click()
        page.wait_for_url("**/dashboard/review?flash=decided")
        assert page.locator("li.review-item").count() == before - 2
        watch.check("review decisions")
        with Database(engine).read() as conn:
            decided = conn.execute(
                select(consent_events.c.action, consent_events.c.channel, consent_events.c.evidence)
                .where(consent_events.c.channel == "admin")
                .order_by(consent_events.c.id)
            ).all()
            undecided = conn.execute(
                select(inbound_messages.c.id).where(
                    inbound_messages.c.review.is_(True) & inbound_messages.c.review_decided_at.is_(None)
                )
            ).all()
        assert [d.action for d in decided] == ["opt_out", "review_cleared"]

        # Reply as a contact from the simulator page: the inbound path classifies it and opts them out.
        with Database(engine).read() as conn:
            subscribed = conn.execute(
                select(contacts.c.phone)
                .join(subscriptions, subscriptions.c.contact_id == contacts.c.id)
                .where(subscriptions.c.status == "subscribed")
                .limit(1)
            ).scalar_one()
        page.goto(server.url + "/dashboard/simulator")
        page.fill("#sim-from", subscribed)
        page.fill("#sim-body", "please stop texting me")
        with page.expect_navigation():
            page.click("text=Send reply")
        assert "Understood as opt-out" in page.inner_text("main")
        assert (
            page.locator("table.sms-table tbody tr").first.inner_text().count("please stop texting me") == 1
        )
        page.click("nav.tabs >> text=Replies")
        page.wait_for_url("**/dashboard/simulator?show=in")
        assert "please stop texting me" in page.inner_text("table.sms-table")
        _shot(page, "dashboard-simulator-reply-desktop")
        watch.check("simulator reply")
        with Database(engine).read() as conn:
            status = conn.execute(
                select(subscriptions.c.status)
                .join(contacts, contacts.c.id == subscriptions.c.contact_id)
                .where(contacts.c.phone == subscribed)
            ).scalar_one()
        engine.dispose()
        assert status == "unsubscribed"
        assert all(d.evidence["operator"] == "admin" for d in decided)
        assert len(undecided) == before - 2
        context.close()

        # The same pages on a phone.
        phone = browser.new_context(**PHONE)
        page = phone.new_page()
        watch = PageWatch(page)
        page.goto(server.url + "/login")
        page.fill("#username", "admin")
        page.fill("#password", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        for key, path, heading in PAGES:
            page.goto(server.url + path)
            assert page.locator("h1").inner_text() == heading
            # Nothing wider than the screen: the page never scrolls sideways on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            _shot(page, f"dashboard-{key}-phone")
            watch.check(f"{path} (phone)")
        page.click("text=Sign out")
        page.wait_for_url("**/login")
        page.goto(server.url + "/dashboard")
        assert "/login" in page.url
        watch.check("sign out")
        phone.close()
