"""The webhooks page in a real browser against a real ``optline serve`` (its in-process worker delivers):
register an endpoint, see the secret once, watch a delivery fail while the receiver is down and land when it
is up, then replay it from the page: the receiver gets the same webhook-id again, signed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from optline.adapters.db.tables import webhook_attempts, webhook_deliveries
from optline.bootstrap import build
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.services import consent
from tests.support import web
from tests.support.hook_receiver import Receiver
from tests.support.server import ARTIFACTS, DESKTOP, PageWatch, accessibility_problems, launch, serve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
NEW_PASSWORD = "a-long-new-password-1"


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_register_watch_a_delivery_land_and_replay_it(
    browser: Any, receiver: Receiver, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    fast = {"OPTLINE_WEBHOOK_RETRY_BASE_SECONDS": "1", "OPTLINE_WORKER_POLL_SECONDS": "0.2"}
    with serve(db_url, **fast) as server:
        password = server.first_run_password()
        page = browser.new_context(**DESKTOP).new_page()
        watch = PageWatch(page)
        page.goto(server.url + "/dashboard/webhooks")
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url("**/account/password")
        page.fill("#current", password)
        page.fill("#new", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.goto(server.url + "/dashboard/webhooks")
        assert "No endpoints yet" in page.inner_text("main")

        page.fill("#h-url", "http://crm.example.com/hooks")  # plain http to another host: refused, said why
        page.click("text=Add endpoint")
        assert "uses plain http" in page.inner_text("[role=alert]")
        watch.clear()  # the 400 is the expected answer
        page.fill("#h-url", receiver.url)
        page.check("input[name=events][value='review.needed']")
        page.click("text=Add endpoint")
        secret = page.inner_text("#new-secret").strip()
        assert secret.startswith("whsec_") and "Shown this once" in page.inner_text("main")
        assert "opt_out, review.needed" in page.inner_text("table")
        watch.check("endpoint added")
        page.goto(server.url + "/dashboard/webhooks")
        assert secret not in page.content()  # shown once

        # An opt-out recorded by another process on the same database; the receiver is down (refused).
        container = build(Settings(env="test", database_url=db_url))
        try:
            program = web.program(container)
            person = web.subscriber(container, program)
            with container.db.transaction() as conn:
                consent.record(
                    conn,
                    container.clock,
                    contact_id=person["id"],
                    program=program,
                    action=Action.OPT_OUT,
                    channel=Channel.API,
                    evidence={"source": "e2e"},
                )

            def count(table: Any, *where: Any) -> int:
                with container.db.read() as conn:
                    return int(
                        conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
                    )

            wait_for("a refused attempt", lambda: count(webhook_attempts) >= 1)
            receiver.start()
            wait_for(
                "the delivery",
                lambda: count(webhook_deliveries, webhook_deliveries.c.status == "delivered") == 1,
            )
        finally:
            container.close()

        page.reload()
        row = page.locator("tr.delivery").first
        assert "opt_out" in row.inner_text() and row.locator(".status").inner_text().lower() == "delivered"
        row.locator("summary").click()
        attempts = row.locator("ol.attempts li").all_inner_texts()
        assert "ConnectError" in attempts[0] and "HTTP 200" in attempts[-1]
        assert accessibility_problems(page) == []
        _shot(page, "dashboard-webhooks-desktop")
        watch.check("deliveries")

        (first,) = receiver.accepted()
        row.locator("button", has_text="Replay").click()
        page.wait_for_url("**/dashboard/webhooks?flash=replayed")
        assert "same webhook-id" in page.inner_text("main")
        wait_for("the replay", lambda: len(receiver.accepted()) == 2)
        again = receiver.accepted()[1]
        assert again.headers["webhook-id"] == first.headers["webhook-id"] and again.body == first.body
        assert Webhook(secret).verify(again.body, again.headers)["type"] == "opt_out"
        wait_for("the replay recorded", lambda: _replay_shown(page))
        watch.check("replayed")

        page.click("button:has-text('Disable')")
        page.wait_for_url("**/dashboard/webhooks?flash=disabled")
        assert "disabled" in page.locator("tbody tr").first.inner_text()
        page.click("button:has-text('Enable')")
        page.wait_for_url("**/dashboard/webhooks?flash=enabled")
        assert "pending deliveries resume" in page.inner_text("main")
        assert page.locator("button:has-text('Disable')").count() == 1
        watch.check("disabled and enabled again")


def _replay_shown(page: Any) -> bool:
    page.reload()
    row = page.locator("tr.delivery").first
    row.locator("summary").click()
    return (
        "replay" in row.locator("ol.attempts").inner_text()
        and row.locator(".status").inner_text().lower() == "delivered"
    )
