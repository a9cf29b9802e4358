"""The one-tap opt-out link end to end, in a real browser against a real ``optline serve`` (SQLite, its
in-process worker, the simulator): a campaign goes out, the link is taken from the text the simulated
phone received, a GET changes nothing, the Unsubscribe tap opts the person out in the ledger with web
evidence, the next campaign skips them and reaches everyone else, and a tampered link gets the friendly
page."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from optline.adapters.clock import SystemClock
from optline.adapters.db.tables import consent_events, messages, simulator_messages, subscriptions
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.services import consent
from tests.support import outbound
from tests.support.server import ARTIFACTS, DESKTOP, PHONE, PageWatch, accessibility_problems, launch, serve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

PEOPLE = 6


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


def _optline(db_url: str, *args: str) -> str:
    """An ``optline`` command as the operator types it; its output (fails the test on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "optline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "OPTLINE_DATABASE_URL": db_url,
            "OPTLINE_ENV": "test",
            "COLUMNS": "200",
            "NO_COLOR": "1",
        },
    )
    assert done.returncode == 0, f"optline {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _send_campaign(db_url: str, name: str, text: str) -> str:
    """Create and send a campaign; ``--no-dispatch``: the server's in-process worker does the sending,
    and the command waits (its progress bar) until nothing is left to send."""
    _optline(db_url, "campaigns", "create", name, "-p", "deals", "-t", text)
    return _optline(db_url, "campaigns", "send", name, "-p", "deals", "--no-dispatch")


def _received(c: Container, phone: str) -> list[str]:
    """What the simulated phone received, oldest first (the simulator's outbox)."""
    with c.db.read() as conn:
        return list(
            conn.execute(
                select(simulator_messages.c.body)
                .where(simulator_messages.c.direction == "out", simulator_messages.c.to_phone == phone)
                .order_by(simulator_messages.c.id)
            ).scalars()
        )


def _link(text: str, base: str) -> str:
    found = re.findall(re.escape(base) + r"/u/[A-Za-z0-9]+", text)
    assert len(found) == 1, text
    return str(found[0])


def test_link_from_a_sent_campaign_unsubscribes_and_the_next_campaign_skips(
    browser: Any, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    setup = build(Settings(env="test", database_url=db_url), clock=SystemClock(), migrate_db=True)
    # Quiet hours are the dispatcher's to enforce: the contacts live where it is daytime now, so the
    # campaigns go out whenever the test runs.
    daytime = outbound.zone_where(True)
    with setup.db.transaction() as conn:
        deals = outbound.make_program(conn, setup.clock, "deals", brand="Acme Coffee")  # program-scoped
        news = outbound.make_program(conn, setup.clock, "news", brand="Acme Coffee")
        ids = outbound.insert_contacts(conn, setup.clock.now(), 0, PEOPLE, time_zone=daytime, us_state=None)
        outbound.subscribe(
            conn, setup.clock, deals, ids, evidence={"source": "test", "disclosure_text": "STOP"}
        )
        outbound.subscribe(
            conn, setup.clock, news, ids[:1], evidence={"source": "test", "disclosure_text": "STOP"}
        )
    phones = [outbound.phone(i) for i in range(PEOPLE)]
    person, other = ids[0], ids[1]

    with serve(db_url, OPTLINE_WORKER_POLL_SECONDS="0.2") as server:
        progress = _send_campaign(
            db_url, "autumn", "{{ brand }}: autumn blend, 15% off. Opt out: {{ optout_url }}"
        )
        assert f"sent {PEOPLE}" in progress, progress
        texts = [_received(setup, p) for p in phones]
        assert all(len(t) == 1 and t[0].startswith("Acme Coffee: autumn blend") for t in texts), texts
        link = _link(texts[0][0], server.url)

        context = browser.new_context(**PHONE)
        page = context.new_page()
        watch = PageWatch(page)
        before = _state(setup, person)
        page.goto(link)
        assert page.locator("h1").inner_text() == "Unsubscribe from text messages"
        assert "Acme Coffee" in page.inner_text("main")
        page.reload()  # link previews and scanners fetch GETs: any number of them changes nothing
        assert _state(setup, person) == before == ({"subscribed"}, 2)
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

        statuses, events = _state(setup, person)
        assert statuses == {"unsubscribed"} and events == 3
        with setup.db.read() as conn:
            event = conn.execute(select(consent_events).order_by(consent_events.c.id.desc()).limit(1)).one()
            sent_id = conn.execute(
                select(messages.c.id).where(
                    messages.c.contact_id == person, messages.c.campaign_id.is_not(None)
                )
            ).scalar_one()
        assert (event.action, event.channel, event.program_id) == ("opt_out", "web", None)  # brand-wide
        ev = event.evidence
        assert ev["ip"] == "127.0.0.1" and "Chrome" in ev["user_agent"] and ev["message_id"] == sent_id
        assert ev["url"] == link and "Chosen: All messages from Acme Coffee" in ev["page_text"]

        page.goto(link)  # coming back later: already done, nothing to tap
        assert page.locator("h1").inner_text() == "You're already unsubscribed"
        assert page.locator("button").count() == 0
        watch.check("revisit")

        token = link.rsplit("/", 1)[1]
        tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
        for bad in (tampered, "nonsense", token + "x", "%3Cscript%3E"):
            response = page.goto(f"{server.url}/u/{bad}")
            assert response is not None and response.status == 404
            assert page.locator("h1").inner_text() == "We couldn't find this link"
            assert "Reply STOP" in page.inner_text("main")
            assert "Traceback" not in page.content()
        _shot(page, "optout-unknown-phone")
        assert _state(setup, person) == (statuses, events)
        context.close()

        # Another recipient, on a desktop browser without JavaScript, by keyboard alone.
        context = browser.new_context(**DESKTOP, java_script_enabled=False)
        page = context.new_page()
        watch = PageWatch(page)
        page.goto(_link(texts[1][0], server.url))
        assert page.locator("input[type=radio]").count() == 2  # this program, or all of the brand
        _shot(page, "optout-page-desktop")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.type") == "radio"
        page.keyboard.press("Tab")  # the group is one stop: next is the button
        assert page.evaluate("document.activeElement.textContent") == "Unsubscribe"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("h1").inner_text() == "You're unsubscribed"
        _shot(page, "optout-done-desktop")
        watch.check("desktop without JavaScript")
        context.close()
        assert _state(setup, other)[0] == {"unsubscribed"}

        # The next campaign: the two who left are not in its audience; everyone else gets it.
        dry = _optline(db_url, "campaigns", "audience", "autumn", "-p", "deals")
        assert re.search(r"excluded: opted out\D*2\b", dry), dry
        progress = _send_campaign(
            db_url, "weekend", "{{ brand }}: 2-for-1 lattes this weekend. {{ optout_url }}"
        )
        assert f"sent {PEOPLE - 2}" in progress, progress
        texts = [_received(setup, p) for p in phones]
        assert [len(t) for t in texts] == [1, 1] + [2] * (PEOPLE - 2)
        assert all(t[-1].startswith("Acme Coffee: 2-for-1 lattes") for t in texts[2:])
        with setup.db.read() as conn:
            reached = set(
                conn.execute(
                    select(messages.c.contact_id).where(
                        # the simulator answers with a delivery receipt, as a provider does
                        messages.c.status.in_(("sent", "delivered")),
                        messages.c.body.like("%2-for-1%"),
                    )
                ).scalars()
            )
            news_state = consent.current(conn, person, news)[0]  # "all messages from Acme Coffee" was chosen
        assert reached == set(ids[2:]) and news_state.value == "unsubscribed"
    setup.close()
