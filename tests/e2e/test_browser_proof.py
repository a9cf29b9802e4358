""" "Download evidence" in a real browser: the button on a contact's page downloads the PDF, and the HTML
evidence prints on A4 and Letter (Chromium's print to PDF, then pdftoppm to PNG in test-artifacts/)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.db.database import Database, make_engine
from optline.adapters.db.tables import inbound_messages
from tests.e2e.test_browser_dashboard import NEW_PASSWORD
from tests.support.server import ARTIFACTS, DESKTOP, PageWatch, accessibility_problems, launch, serve

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def test_download_evidence_from_the_contact_page_and_print_it(browser: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'optline.db'}"
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(db_url) as server:
        password = server.first_run_password()
        page = browser.new_context(**DESKTOP, accept_downloads=True).new_page()
        watch = PageWatch(page)
        page.goto(server.url + "/login")
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url("**/account/password")
        page.fill("#current", password)
        page.fill("#new", NEW_PASSWORD)
        page.fill("#confirm", NEW_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard?flash=password")
        page.click("text=Load demo data")
        page.wait_for_url("**/dashboard?flash=demo")

        with Database(make_engine(db_url)).read() as conn:
            opted_out = conn.execute(
                select(inbound_messages.c.from_phone).where(inbound_messages.c.intent == "optout").limit(1)
            ).scalar_one()
        page.goto(server.url + "/dashboard/contacts")
        page.fill("#phone", opted_out)
        page.click("form.search button")
        assert accessibility_problems(page) == []
        page.screenshot(path=str(ARTIFACTS / "proof-contact-page.png"), full_page=True)
        with page.expect_download() as download:
            page.click("text=Download evidence")
        pdf = ARTIFACTS / download.value.suggested_filename
        download.value.save_as(pdf)
        assert (
            pdf.name == f"consent-evidence-{opted_out.lstrip('+')}.pdf" and pdf.read_bytes()[:5] == b"%PDF-"
        )
        watch.check("download evidence")

        # The HTML evidence, as a person prints it: Chromium's own print to PDF on both paper sizes.
        html = page.request.get(
            server.url + f"/dashboard/contacts/proof?phone={opted_out.replace('+', '%2B')}&format=html"
        ).text()
        assert "Consent evidence for " + opted_out in html and "opt out" in html.lower()
        saved = page.context.new_page()  # as a saved file opens: no dashboard origin, no dashboard CSP
        saved.set_content(html)
        for paper in ("A4", "Letter"):
            printed = tmp_path / f"proof-html-{paper}.pdf"
            saved.pdf(path=str(printed), format=paper, print_background=True)
            prefix = ARTIFACTS / f"proof-html-print-{paper}"
            subprocess.run(
                ["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "1", str(printed), str(prefix)], check=True
            )
            assert next(ARTIFACTS.glob(f"{prefix.name}*.png")).stat().st_size > 10_000
        # Nothing runs off the page: the widest element fits an A4 page's printable width (180 mm ≈ 680 px).
        saved.emulate_media(media="print")
        saved.set_viewport_size({"width": 680, "height": 1000})
        assert saved.evaluate("document.documentElement.scrollWidth") <= 680
