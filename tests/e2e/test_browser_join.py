"""The public sign-up form in a real browser (Playwright + Debian's Chromium) against a real `optline serve`.

Screenshots go to test-artifacts/. Never `playwright install`: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from optline.adapters.db.tables import consent_events, contacts, messages, subscriptions
from optline.domain import segments
from tests.support.server import ARTIFACTS, launch, serve

pytestmark = pytest.mark.browser

OPTLINE = str(Path(sys.executable).parent / "optline")
SECRET = "browser-test-secret-key-0123456789abcdef"
PHONE = "+14155550134"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = f"sqlite:///{tmp_path / 'optline.db'}"
    env = {**os.environ, "OPTLINE_DATABASE_URL": db, "OPTLINE_ENV": "test", "OPTLINE_SECRET_KEY": SECRET}
    subprocess.run([OPTLINE, "init"], env=env, check=True, capture_output=True)
    subprocess.run(
        [
            OPTLINE,
            "programs",
            "create",
            "--help-contact",
            "help@acme.example",
            "deals",
            "--brand",
            "Acme Coffee",
            "--sender",
            "+14155550100",
            "--double-opt-in",
            "--join-keyword",
            "JOIN",
            "--frequency",
            "Up to 4 msgs/month",
            "--terms-url",
            "https://acme.example/terms",
            "--privacy-url",
            "https://acme.example/privacy",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    with serve(db, OPTLINE_SECRET_KEY=SECRET) as running:
        yield {"base": running.url, "env": {**env, "OPTLINE_PUBLIC_URL": running.url}, "db": db}


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"join-{name}.png"), full_page=True)


def db_state(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        contact = conn.execute(select(contacts).where(contacts.c.phone == PHONE)).first()
        out: dict[str, Any] = {"contact": contact}
        if contact is not None:
            out["subscription"] = conn.execute(
                select(subscriptions).where(subscriptions.c.contact_id == contact.id)
            ).first()
            out["events"] = conn.execute(
                select(consent_events)
                .where(consent_events.c.contact_id == contact.id)
                .order_by(consent_events.c.seq)
            ).all()
            out["messages"] = conn.execute(
                select(messages).where(messages.c.contact_id == contact.id).order_by(messages.c.id)
            ).all()
    engine.dispose()
    return out


def confirm_by_sms(server: dict[str, Any], text: str) -> None:
    """The person's reply, through the simulator provider's signed webhook path (`optline inbound simulate`)."""
    done = subprocess.run(
        [OPTLINE, "inbound", "simulate", "--from", PHONE, "--to", "+14155550100", "--body", text],
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_web_form_double_opt_in_in_the_browser(server: dict[str, Any], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, user_agent="optline-browser-test")
    page.goto(f"{server['base']}/join/deals")
    box = page.get_by_role("checkbox")
    assert not box.is_checked()  # unchecked when shown
    label = page.locator("label[for=consent]").inner_text()
    for element in (
        "Acme Coffee",
        "Up to 4 msgs/month",
        "Msg & data rates may apply",
        "Reply HELP",
        "STOP",
        "Consent is not a condition of purchase",
        "https://acme.example/terms",
        "https://acme.example/privacy",
    ):
        assert element in label
    shot(page, "form")

    # Without the box checked: refused, clearly, and nothing is recorded or sent.
    page.get_by_label("Mobile number").fill("(415) 555-0134")
    page.get_by_role("button", name="Sign up").click()
    alert = page.get_by_role("alert")
    assert "check the box to agree" in alert.inner_text()
    assert page.get_by_label("Mobile number").input_value() == "(415) 555-0134"
    shot(page, "refused")
    assert db_state(server["db"])["contact"] is None

    # Checked: pending, and the disclosure SMS is in the outbox.
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("heading", name="Check your phone").wait_for()
    assert "0134" in page.content()
    shot(page, "sent")
    state = db_state(server["db"])
    assert state["subscription"].status == "pending"  # not sendable for marketing
    assert state["subscription"].consent_event_id is None
    [opt_in] = state["events"]
    assert opt_in.channel == "web" and opt_in.evidence["disclosure_text"] == label
    assert opt_in.evidence["user_agent"] == "optline-browser-test"
    assert opt_in.evidence["source_url"] == f"{server['base']}/join/deals"
    assert opt_in.evidence["ip"] == "127.0.0.1"
    [prompt] = state["messages"]
    assert prompt.kind == "signup" and "Reply Y to confirm" in prompt.body and "STOP to cancel" in prompt.body
    # The SMS asks for the yes in two segments; the full disclosure the person saw is in the evidence above.
    assert segments.count(prompt.body).segments <= 2 and "Acme Coffee" in prompt.body

    # The person replies YES: subscribed, with both messages in the evidence.
    confirm_by_sms(server, "YES")
    state = db_state(server["db"])
    assert state["subscription"].status == "subscribed"
    confirmed = state["events"][-1]
    assert confirmed.action == "opt_in_confirmed"
    assert confirmed.evidence["prompt"]["body"] == prompt.body and confirmed.evidence["message_text"] == "YES"
    assert confirmed.evidence["first_step"]["evidence"]["user_agent"] == "optline-browser-test"


def test_form_works_without_javascript_and_inside_an_iframe(server: dict[str, Any], browser: Any) -> None:
    # The embedding site: another origin (localhost vs 127.0.0.1) serving a page with an iframe.
    html = f'<!doctype html><title>shop</title><iframe src="{server["base"]}/join/deals" width="400" height="700"></iframe>'
    handler = type(
        "H",
        (http.server.BaseHTTPRequestHandler,),
        {
            "do_GET": lambda self: (
                self.send_response(200),
                self.send_header("Content-Type", "text/html"),
                self.end_headers(),
                self.wfile.write(html.encode()),
            ),
            "log_message": lambda self, *a: None,
        },
    )
    shop = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=shop.serve_forever, daemon=True).start()
    try:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"http://localhost:{shop.server_address[1]}/")
        frame = page.frame_locator("iframe")
        frame.get_by_role("heading", name="Get texts from Acme Coffee").wait_for()
        assert not frame.get_by_role("checkbox").is_checked()
        shot(page, "embedded")
        # Sign up inside the frame: another site's page, so the form must work without its cookie.
        frame.get_by_label("Mobile number").fill("(415) 555-0134")
        frame.get_by_role("checkbox").check()
        frame.get_by_role("button", name="Sign up").click()
        frame.get_by_role("heading", name="Check your phone").wait_for()
        shot(page, "embedded-sent")
        # Without JavaScript, top level: the form still posts and answers (one prompt per window: the
        # number is already pending, so the page is the same and no second text goes out).
        page.goto(f"{server['base']}/join/deals")
        page.get_by_label("Mobile number").fill("415 555 0134")
        page.get_by_role("checkbox").check()
        page.get_by_role("button", name="Sign up").click()
        page.get_by_role("heading", name="Check your phone").wait_for()
        context.close()
    finally:
        shop.shutdown()
    state = db_state(server["db"])
    assert state["subscription"].status == "pending" and len(state["messages"]) == 1
    assert state["events"][0].evidence["shown_in"].startswith("http://localhost:")  # the embedding page
