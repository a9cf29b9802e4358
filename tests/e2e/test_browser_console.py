"""The marketer's console in a real browser (Chromium at 1366 and 390 px) against one ``optline serve``: a
campaign from the compose form to "delivered" through the simulator, a contact found by name, each CSV
export downloaded and opened, an API key created and revoked. Console errors or failed requests fail."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from optline.adapters.clock import SystemClock
from optline.bootstrap import build
from optline.config import Settings
from tests.support import outbound
from tests.support.server import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    PageWatch,
    Server,
    accessibility_problems,
    launch,
    serve,
)

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
PASSWORD = "a-long-new-password-1"
NAMES = [("Ana", "Lima"), ("Bruno", "Costa"), ('=HYPERLINK("http://evil.example")', "Formula")]


@dataclass
class Console:
    server: Server
    browser: Any
    state: Path  # the signed-in session, shared by every context
    zone: str


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One server for the whole module (the suite is near its time budget), signed in once."""
    tmp = tmp_path_factory.mktemp("console")
    db_url = f"sqlite:///{tmp / 'optline.db'}"
    zone = outbound.zone_where(True)  # a zone where it is daytime now: nothing is deferred by quiet hours
    with serve(db_url) as server, sync_api.sync_playwright() as p:
        c = build(Settings(env="test", database_url=db_url), clock=SystemClock())
        with c.db.transaction() as conn:
            program = outbound.make_program(conn, c.clock, "spring")
            ids = outbound.insert_contacts(
                conn,
                c.clock.now(),
                0,
                len(NAMES),
                time_zone=zone,
                attributes=lambda i: {"first_name": NAMES[i][0], "last_name": NAMES[i][1]},
            )
            outbound.subscribe(conn, c.clock, program, ids)
        c.close()
        browser = launch(p)
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        page.goto(server.url + "/login")
        page.fill("#username", "admin")
        page.fill("#password", server.first_run_password())
        page.click("button[type=submit]")
        page.wait_for_url("**/account/password")
        page.fill("#current", server.first_run_password())
        page.fill("#new", PASSWORD)
        page.fill("#confirm", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard?flash=password")
        state = tmp / "state.json"
        context.storage_state(path=str(state))
        context.close()
        yield Console(server, browser, state, zone)
        browser.close()


def _page(console: Console, size: dict[str, Any]) -> tuple[Any, Any, PageWatch]:
    context = console.browser.new_context(**size, storage_state=str(console.state), accept_downloads=True)
    page = context.new_page()
    return context, page, PageWatch(page)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _fits_the_phone(page: Any) -> None:
    # Nothing wider than the screen: no column is cut off (tables become one card per row).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, page.url


def test_campaign_from_compose_to_delivered(console: Console) -> None:
    context, page, watch = _page(console, DESKTOP)
    page.goto(console.server.url + "/dashboard/campaigns")
    page.click("text=New campaign")
    page.wait_for_url("**/dashboard/campaigns/new")
    page.select_option("#c-program", label="spring (Acme)")
    page.fill("#c-name", "spring sale")
    # The live preview: a typographic dash and quotes force UCS-2, and the preview names them.
    page.fill("#c-template", "Hi {{ first_name }} — our “spring” sale starts today")
    page.fill("#c-filters", f"time_zone={console.zone}")
    page.wait_for_selector("[data-testid=ucs2]")
    preview = page.inner_text("#preview")
    assert "U+2014" in preview and "UCS-2" in preview and "Acme: Hi Ana" in preview
    assert page.inner_text("[data-testid=recipients]") == "3"
    _shot(page, "console-compose-desktop")
    page.fill("#c-template", "Hi {{ first_name }}, our spring sale starts today")
    sync_api.expect(page.locator("[data-testid=encoding]")).to_have_text("GSM-7")  # (the CSP forbids eval)
    # The personal opt-out link is added by default, as long as the one sent (OPTLINE_PUBLIC_URL + a token).
    assert re.search(
        rf"Reply STOP to opt out or tap {re.escape(console.server.url)}/u/\w{{10}}$",
        page.inner_text("[data-testid=preview-text]"),
    )
    assert accessibility_problems(page) == []
    watch.check("compose")
    with page.expect_navigation():
        page.click("button[value=send]")
    assert re.search(r"/dashboard/campaigns/\d+", page.url)
    campaign_url = page.url.split("?")[0]
    # serve's worker sends; the simulator answers with receipts, which may land after the campaign is done.
    deadline = time.monotonic() + 300  # a hang guard: the other test workers share the CPU

    def settled() -> bool:
        return (
            page.inner_text("[data-testid=campaign-status]") == "done"
            and page.inner_text("[data-testid=funnel-delivered]") == "3"
        )

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.5)
        page.goto(campaign_url)
    assert page.inner_text("[data-testid=campaign-status]") == "done"
    assert page.inner_text("[data-testid=funnel-queued]") == "3"
    assert page.inner_text("[data-testid=funnel-delivered]") == "3"  # no more "DELIVERED 0"
    main = page.inner_text("main")
    assert "opt in via import" in main and "Acme: Hi Ana, our spring sale starts today." in main
    assert accessibility_problems(page) == []
    _shot(page, "console-campaign-desktop")
    watch.check("campaign page")
    context.close()

    context, page, watch = _page(console, PHONE)
    for path, name in (
        (campaign_url, "campaign"),
        (console.server.url + "/dashboard/campaigns", "campaigns"),
        (console.server.url + "/dashboard/campaigns/new", "compose"),
    ):
        page.goto(path)
        _fits_the_phone(page)
        _shot(page, f"console-{name}-phone")
    page.goto(console.server.url + "/dashboard/campaigns")
    assert page.locator("td[data-label=Rate]").first.is_visible()  # the opt-out rate is not cut off
    watch.check("phone")
    context.close()


def test_find_a_contact_by_name(console: Console) -> None:
    for size, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        context, page, watch = _page(console, size)
        page.goto(console.server.url + "/dashboard/contacts")
        page.fill("#phone", "lima")
        with page.expect_navigation():
            page.click("form.search button")
        rows = page.locator("table.contact-results tbody tr")
        assert rows.count() == 1 and "Ana Lima" in rows.first.inner_text()
        _shot(page, f"console-contacts-{suffix}")
        with page.expect_navigation():
            rows.first.locator("a").first.click()
        main = page.inner_text("main")
        assert "Ana Lima" in main and "subscribed" in main
        if size is PHONE:
            _fits_the_phone(page)
        _shot(page, f"console-contact-{suffix}")
        watch.check("contact by name")
        context.close()


def _download(page: Any, selector: str, tmp: Path) -> list[dict[str, str]]:
    with page.expect_download() as info:
        page.click(selector)
    path = tmp / info.value.suggested_filename
    info.value.save_as(str(path))
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_export_each_csv_and_open_it(console: Console, tmp_path: Path) -> None:
    context, page, watch = _page(console, DESKTOP)
    page.goto(console.server.url + "/dashboard/contacts")
    people = _download(page, "text=Export CSV", tmp_path)
    names = {r["name"] for r in people}
    assert "Ana Lima" in names and '\'=HYPERLINK("http://evil.example") Formula' in names  # escaped
    page.goto(console.server.url + "/dashboard/campaigns")
    report = _download(page, "text=Export report", tmp_path)
    assert [r["campaign"] for r in report] == ["spring sale"] and report[0]["delivered"] == "3"
    optouts = _download(page, "text=Export opt-outs", tmp_path)
    assert optouts == []  # nobody left (a header only)
    page.goto(console.server.url + "/dashboard/list-review")
    with page.expect_navigation():
        page.click("text=Run the review now")
    findings = _download(page, "text=Export findings", tmp_path)
    assert all(r["reason"] for r in findings)
    watch.check("exports")
    context.close()


def test_create_and_revoke_an_api_key(console: Console) -> None:
    context, page, watch = _page(console, DESKTOP)
    page.goto(console.server.url + "/dashboard/api-keys")
    page.fill("#k-name", "checkout")
    with page.expect_navigation():
        page.click("text=Create key")
    key = page.inner_text("[data-testid=new-key]")
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(console.server.url + "/v1/campaigns", headers=auth, timeout=30).status_code == 200
    page.goto(console.server.url + "/dashboard/api-keys")
    assert key not in page.content()  # shown once
    _shot(page, "console-api-keys-desktop")
    with page.expect_navigation():
        page.click("button[aria-label='Revoke checkout']")
    assert "Key revoked" in page.inner_text("main") and "revoked" in page.inner_text("table")
    assert httpx.get(console.server.url + "/v1/campaigns", headers=auth, timeout=30).status_code == 401
    watch.check("api keys")
    context.close()


# Last in the module: it adds contacts (without consent, so nothing above would change if it ran first).
IMPORT_FILE = (
    "phone,first_name,consented_at,consent_source\n"
    "+1 212 555 0101,Lia,,\n"
    "not a number,<b>Max</b>,,\n"
    "+1 212 555 0102,Noa,2024-02-30,web\n"
    '+1 212 555 0103,"=HYPERLINK(""http://evil.example"")",,\n'
    "+1 212 555 0101,Lia again,,\n"
)


def test_import_a_file_with_bad_rows_see_them_and_download_the_rejects(
    console: Console, tmp_path: Path
) -> None:
    upload = tmp_path / "people.csv"
    upload.write_text(IMPORT_FILE, encoding="utf-8")
    context, page, watch = _page(console, DESKTOP)
    page.goto(console.server.url + "/dashboard/programs")
    page.set_input_files("input[type=file][name=file]", str(upload))
    with page.expect_navigation():
        page.click("form.upload button[type=submit]")
    assert re.search(r"/dashboard/imports/\d+$", page.url), page.url
    import_url = page.url
    main = page.inner_text("main")
    assert "Imported people.csv into spring" in main
    rows = page.locator("table.rejects tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == ["3", "4", "6"]
    assert (
        "bad phone number" in rows.nth(0).inner_text() and "first_name=<b>Max</b>" in rows.nth(0).inner_text()
    )
    assert "bad consented_at date" in rows.nth(1).inner_text()
    assert "duplicate: phone +12125550101 is already on line 2" in rows.nth(2).inner_text()
    assert page.locator("table.rejects b").count() == 0  # the cell is text, not markup
    assert accessibility_problems(page) == []
    _shot(page, "console-import-desktop")
    rejects = _download(page, "text=Download rejects CSV", tmp_path)
    assert [(r["line"], r["first_name"]) for r in rejects] == [
        ("3", "<b>Max</b>"),
        ("4", "Noa"),
        ("6", "Lia again"),
    ]
    assert rejects[2]["phone"] == "'+1 212 555 0101"  # escaped as every export: inert in a spreadsheet
    page.goto(console.server.url + "/dashboard/imports")
    assert page.locator("table.imports a", has_text="people.csv").count() == 1
    watch.check("import desktop")
    context.close()

    context, page, watch = _page(console, PHONE)
    for url, name in ((import_url, "import"), (console.server.url + "/dashboard/imports", "imports")):
        page.goto(url)
        _fits_the_phone(page)
        _shot(page, f"console-{name}-phone")
    assert page.locator("table.imports td[data-label=Rejected]").first.is_visible()
    watch.check("import phone")


def test_program_page_turns_the_link_off_and_edits_sending_window_and_disclosure(console: Console) -> None:
    """A program of its own (the other tests' "spring" keeps the defaults): the link turned off, a sending
    window and a disclosure refused beside their fields and then saved, the compose preview without the link."""
    c = build(Settings(env="test", database_url=console.server.database_url), clock=SystemClock())
    with c.db.transaction() as conn:
        program = outbound.make_program(conn, c.clock, "autumn", sender_numbers=["+14155550199"])
    c.close()
    url = f"{console.server.url}/dashboard/programs/{program['id']}"
    context, page, watch = _page(console, DESKTOP)
    page.goto(url)
    link = page.get_by_label("add each person's one-tap opt-out link to marketing messages")
    assert link.is_checked()  # on by default
    link.uncheck()
    page.fill("#e-quiet-start", "07:00")
    page.fill("#e-disclosure", "Acme autumn deals by text. Msg & data rates may apply. Reply STOP to stop.")
    with page.expect_navigation():
        page.click("text=Save settings")
    # Refused beside the field, everything typed still there, the box still unchecked.
    error = page.locator("#err-quiet_hours")
    assert "before 08:00, the earliest the law allows" in error.inner_text() and error.is_visible()
    assert page.input_value("#e-quiet-start") == "07:00" and not link.is_checked()
    assert page.locator("#e-disclosure").get_attribute("aria-invalid") is None  # one error at a time: the
    # sending window is checked before the disclosure, so only it is marked
    assert accessibility_problems(page) == []
    _shot(page, "program-settings-error-desktop")
    watch.clear()  # the refusal is a 400 by design
    page.fill("#e-quiet-start", "09:00")
    page.fill("#e-quiet-end", "20:00")
    with page.expect_navigation():
        page.click("text=Save settings")
    disclosure_error = page.locator("#err-disclosure")
    assert "HELP instructions" in disclosure_error.inner_text()
    assert page.locator("#e-disclosure").get_attribute("aria-invalid") == "true"
    watch.clear()
    page.fill(
        "#e-disclosure",
        "Acme autumn deals by text, up to 4 msgs/month. Msg & data rates may apply. "
        "Consent is not a condition of purchase. Reply HELP for help, STOP to cancel.",
    )
    with page.expect_navigation():
        page.click("text=Save settings")
    assert "Settings saved." in page.inner_text("main")
    assert not link.is_checked() and page.input_value("#e-quiet-start") == "09:00"
    assert "up to 4 msgs/month" in page.input_value("#e-disclosure")
    _shot(page, "program-settings-saved-desktop")
    # The compose preview follows the setting: the STOP sentence alone, no link.
    page.goto(f"{console.server.url}/dashboard/campaigns/new?program={program['id']}")
    page.fill("#c-template", "Our autumn blend is here")
    sync_api.expect(page.locator("[data-testid=preview-text]")).to_have_text(
        "Acme: Our autumn blend is here. Reply STOP to opt out."
    )
    watch.check("program settings")
    context.close()

    context, page, watch = _page(console, PHONE)
    page.goto(url)
    page.fill("#e-quiet-end", "22:00")
    with page.expect_navigation():
        page.click("text=Save settings")
    assert "after 21:00, the latest the law allows" in page.inner_text("#err-quiet_hours")
    _fits_the_phone(page)
    _shot(page, "program-settings-error-phone")
    watch.clear()
    page.goto(url)
    _fits_the_phone(page)
    _shot(page, "program-settings-phone")
    watch.check("program settings on the phone")
    context.close()
