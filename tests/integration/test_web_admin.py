"""The dashboard's administration pages on both engines: API keys (shown once, last use, revoke), operators
(add, disable, reset password) and a program's settings, each through the ASGI app with CSRF."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from optline.adapters.db import programs as program_repo
from optline.adapters.db import signups as signup_repo
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import users
from tests.support import outbound, web


@pytest.fixture
def client(container: Container) -> TestClient:
    return web.signed_in(container)


def test_api_key_is_shown_once_used_and_revoked(container: Container, client: TestClient) -> None:
    csrf = web.csrf(client.get("/dashboard/api-keys").text)
    assert client.post("/dashboard/api-keys", data={"name": "shop"}).status_code == 403  # CSRF
    created = client.post("/dashboard/api-keys", data={"name": "shop", "csrf": csrf})
    key = re.search(r'data-testid="new-key">([^<]+)<', created.text)
    assert key, created.text
    token = key.group(1)
    api = TestClient(create_app(container))
    assert api.get("/v1/campaigns", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listing = client.get("/dashboard/api-keys").text
    assert (
        token not in listing and "shop" in listing and "never" not in web.page_text(listing)
    )  # its last use
    key_id = re.search(r'action="/dashboard/api-keys/(\d+)/revoke"', listing)
    assert key_id
    r = client.post(
        f"/dashboard/api-keys/{key_id.group(1)}/revoke", data={"csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert api.get("/v1/campaigns", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert "revoked" in web.page_text(client.get("/dashboard/api-keys").text)
    assert client.post("/dashboard/api-keys/99999/revoke", data={"csrf": csrf}).status_code == 404


def test_operators_are_added_disabled_and_reset(container: Container, client: TestClient) -> None:
    csrf = web.csrf(client.get("/dashboard/users").text)
    added = client.post("/dashboard/users", data={"username": "joao", "csrf": csrf})
    one_time = re.search(r'data-testid="one-time-password">([^<]+)<', added.text)
    assert one_time
    assert "already exists" in web.page_text(
        client.post("/dashboard/users", data={"username": "joao", "csrf": csrf}).text
    )
    joao = TestClient(create_app(container))
    assert web.log_in(joao, "joao", one_time.group(1)) == 303
    assert joao.get("/dashboard", follow_redirects=False).headers["location"] == "/account/password"
    with container.db.read() as conn:
        ids = {u["username"]: u["id"] for u in users.list_all(conn)}
    r = client.post(f"/dashboard/users/{ids['joao']}/disable", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert joao.get("/dashboard", follow_redirects=False).headers["location"].startswith("/login")  # ended
    assert web.log_in(TestClient(create_app(container)), "joao", one_time.group(1)) == 401
    myself = client.post(f"/dashboard/users/{ids['maria']}/disable", data={"csrf": csrf})
    assert myself.status_code == 409 and "cannot disable yourself" in web.page_text(myself.text)
    client.post(f"/dashboard/users/{ids['joao']}/enable", data={"csrf": csrf})
    reset = client.post(f"/dashboard/users/{ids['joao']}/reset-password", data={"csrf": csrf})
    fresh = re.search(r'data-testid="one-time-password">([^<]+)<', reset.text)
    assert fresh and fresh.group(1) != one_time.group(1)
    assert web.log_in(TestClient(create_app(container)), "joao", fresh.group(1)) == 303


def test_program_settings_are_edited_with_the_programs_rules(
    container: Container, client: TestClient
) -> None:
    program, _ = outbound.seed(container, 1)
    url = f"/dashboard/programs/{program['id']}"
    csrf = web.csrf(client.get(url).text)
    form = {"csrf": csrf, "help_contact": "help@acme.example", "help_text": "", "frequency_text": "Up to 4 msgs/week",
            "senders": "(415) 555-0101\n+14155550101", "optout_scope": "brand", "optout_instruction": "monthly",
            "max_segments": "2", "cap_max": "4", "cap_days": "7", "cap_action": "skip", "optout_link": "on",
            "quiet_start": "08:00", "quiet_end": "21:00"}  # fmt: skip
    r = client.post(url, data=form, follow_redirects=False)
    assert r.status_code == 303, web.page_text(r.text)
    with container.db.read() as conn:
        saved = program_repo.get(conn, int(program["id"]))
    assert saved is not None
    assert saved["sender_numbers"] == ["+14155550101"] and saved["optout_scope"] == "brand"
    assert saved["settings"]["frequency_cap"] == {"max": 4, "days": 7.0, "action": "skip"}
    assert saved["settings"]["optout_instruction"] == "monthly" and saved["settings"]["max_segments"] == 2
    assert (
        saved["settings"]["optout_link"] is True and "quiet_hours" not in saved["settings"]
    )  # the law's window
    assert "help@acme.example" in saved["help_text"] and "Up to 4 msgs/week" in saved["help_text"]
    circular = client.post(url, data={**form, "help_text": "Acme: reply HELP for help."})
    assert circular.status_code == 400 and "include help@acme.example" in web.page_text(circular.text)
    assert (
        "Reply HELP for help" not in web.page_text(circular.text).split("Settings")[0]
    )  # the error, not a save
    bad = client.post(url, data={**form, "senders": "not a number"})
    assert bad.status_code == 400 and 'id="err-senders"' in bad.text and "not a number" in bad.text
    assert client.post(url, data={**form, "cap_action": "drop"}).status_code == 400
    assert client.get("/dashboard/programs/99999").status_code == 404


def test_docs_work_offline_from_pinned_local_assets(container: Container) -> None:
    client = TestClient(create_app(container))
    page = client.get("/docs")
    assert (
        page.status_code == 200 and "cdn." not in page.text and "https://" not in page.text.split("<body")[0]
    )
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert "/docs/assets/swagger-ui-bundle.js" in page.text


def test_program_page_edits_the_link_the_sending_window_and_the_disclosure(
    container: Container, client: TestClient
) -> None:
    program, _ = outbound.seed(container, 1)
    url = f"/dashboard/programs/{program['id']}"
    shown = client.get(url).text
    assert 'name="optout_link" value="on" checked' in shown  # on by default
    assert 'value="08:00"' in shown and 'value="21:00"' in shown  # the law's window until narrowed
    default_disclosure = re.search(r'<textarea id="e-disclosure" name="disclosure"[^>]*>([^<]*)<', shown)
    assert default_disclosure and "Msg & data rates may apply" in html.unescape(default_disclosure.group(1))
    form = {"csrf": web.csrf(shown), "help_contact": "https://acme.example/help", "optout_scope": "program",
            "optout_instruction": "every", "max_segments": "3", "quiet_start": "09:30", "quiet_end": "20:00",
            "disclosure": html.unescape(default_disclosure.group(1))}  # fmt: skip
    # Unchecked, the box sends nothing: the link goes off. The disclosure was not edited: no new version.
    assert client.post(url, data=form, follow_redirects=False).status_code == 303
    with container.db.read() as conn:
        saved = program_repo.get(conn, int(program["id"]))
        versions = signup_repo.disclosures_of(conn, int(program["id"]))
    assert saved and saved["settings"]["optout_link"] is False
    assert saved["settings"]["quiet_hours"] == {"start": "09:30", "end": "20:00"} and versions == []
    page = client.get(url).text
    assert 'name="optout_link" value="on" >' in page and 'value="09:30"' in page

    # Errors sit beside their field, the whole form comes back as typed, and nothing is saved.
    custom = "Acme deals by text. Msg & data rates may apply. Reply STOP to stop."
    bad = client.post(url, data={**form, "optout_link": "on", "quiet_start": "07:00", "disclosure": custom})
    assert bad.status_code == 400
    assert re.search(r'id="err-quiet_hours"[^>]*>Sending window start 07:00 is before 08:00', bad.text)
    assert 'value="07:00"' in bad.text and html.escape(custom) in bad.text
    with container.db.read() as conn:
        assert program_repo.get(conn, int(program["id"])) == saved
    bad_text = client.post(url, data={**form, "disclosure": custom})
    assert bad_text.status_code == 400 and 'id="err-disclosure"' in bad_text.text
    assert "HELP instructions" in web.page_text(bad_text.text) and 'aria-invalid="true"' in bad_text.text

    # A complete disclosure is saved as a new version; the sending window is what dispatch now reads.
    good = (
        "Get Acme deals by text, up to 4 msgs/month. Msg & data rates may apply. Consent is not a "
        "condition of purchase. Reply HELP for help, STOP to cancel."
    )
    assert client.post(url, data={**form, "disclosure": good}, follow_redirects=False).status_code == 303
    with container.db.read() as conn:
        versions = signup_repo.disclosures_of(conn, int(program["id"]))
    assert [(v["text"], v["custom"]) for v in versions] == [(good, True)]
    assert good in html.unescape(client.get(url).text)
