"""The sign-up API and the /join form over HTTP (in-process ASGI client), on both engines."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db import api_keys, ledger
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import messages, signups
from optline.bootstrap import Container
from optline.domain import segments
from optline.domain.consent import Status
from optline.entrypoints.api.app import create_app
from optline.services import consent
from optline.services.programs import create_program, get_program


@pytest.fixture
def client(container: Container) -> TestClient:
    with container.db.transaction() as conn:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=["+14155550100"],
            terms_url="https://acme.example/terms",
            privacy_url="https://acme.example/privacy",
        )
        key = api_keys.create(conn, "crm", container.clock.now())
    client = TestClient(create_app(container))
    client.headers["x-test-key"] = key
    return client


def auth(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.headers['x-test-key']}"}


def status_of(container: Container, phone: str) -> Status:
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, phone)
        program = get_program(conn, "deals")
        assert program is not None
        return consent.current(conn, contact["id"], program)[0] if contact else Status.NEVER


def outbox(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return conn.execute(select(messages)).all()


API_BODY = {
    "phone": "(415) 555-0134",
    "source": "checkout page, order 1042",
    "disclosure_text": "Acme Coffee deals by text. Msg & data rates may apply. Reply STOP to cancel.",
    "occurred_at": "2026-11-26T18:55:00Z",
}


def test_api_signup_requires_key_and_evidence(client: TestClient, container: Container) -> None:
    assert client.post("/v1/programs/deals/signups", json=API_BODY).status_code == 401
    missing = {k: v for k, v in API_BODY.items() if k != "disclosure_text"}
    r = client.post("/v1/programs/deals/signups", json=missing, headers=auth(client))
    assert r.status_code == 422 and "disclosure_text" in r.text
    r = client.post(
        "/v1/programs/deals/signups", json={**API_BODY, "occurred_at": None}, headers=auth(client)
    )
    assert r.status_code == 422 and "occurred_at" in r.text
    future = {**API_BODY, "occurred_at": "2030-01-01T00:00:00Z"}
    r = client.post("/v1/programs/deals/signups", json=future, headers=auth(client))
    assert r.status_code == 422 and "future" in r.text
    r = client.post("/v1/programs/deals/signups", json={**API_BODY, "phone": "12"}, headers=auth(client))
    assert r.status_code == 422 and "phone" in r.json()["detail"]
    assert client.post("/v1/programs/nope/signups", json=API_BODY, headers=auth(client)).status_code == 404
    assert outbox(container) == []


def test_api_signup_starts_double_opt_in(client: TestClient, container: Container) -> None:
    r = client.post("/v1/programs/deals/signups", json=API_BODY, headers=auth(client))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["outcome"] == "pending" and body["signup"]["phone"] == "+14155550134"
    assert status_of(container, "+14155550134") is Status.PENDING
    [prompt] = outbox(container)
    assert prompt.kind == "signup" and "Reply Y to confirm" in prompt.body
    again = client.post("/v1/programs/deals/signups", json=API_BODY, headers=auth(client))
    assert again.status_code == 200 and again.json()["outcome"] == "already_pending"
    assert len(outbox(container)) == 1
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, "+14155550134")
        [event] = ledger.history(conn, contact["id"])
    assert event["channel"] == "api" and event["evidence"]["source"] == API_BODY["source"]
    assert event["evidence"]["disclosure_text"] == API_BODY["disclosure_text"]
    assert event["evidence"]["api_key"] == "crm" and event["evidence"]["disclosure_version_id"]
    listed = client.get("/v1/programs/deals/signups?status=pending", headers=auth(client))
    assert [s["phone"] for s in listed.json()] == ["+14155550134"]


def form_token(html: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_join_form_page(client: TestClient, container: Container) -> None:
    r = client.get("/join/deals")
    assert r.status_code == 200
    assert "frame-ancestors *" in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "x-frame-options" not in r.headers
    assert 'type="checkbox" id="consent"' in r.text and "checked" not in r.text.split('id="consent"')[1][:40]
    assert "Msg &amp; data rates may apply" in r.text and "Consent is not a condition of purchase" in r.text
    assert '<a href="https://acme.example/terms"' in r.text
    assert "http://" not in r.text.replace("https://acme.example", "")  # nothing third-party, no links out
    assert client.get("/join/unknown").status_code == 404


def test_join_form_refuses_unchecked_box_and_bad_token(client: TestClient, container: Container) -> None:
    token = form_token(client.get("/join/deals").text)
    r = client.post("/join/deals", data={"phone": "(415) 555-0134", "token": token})
    assert r.status_code == 400 and "check the box to agree" in r.text
    assert 'value="(415) 555-0134"' in r.text
    r = client.post("/join/deals", data={"phone": "(415) 555-0134", "consent": "yes", "token": "forged"})
    assert r.status_code == 403 and "did not send the form back" in r.text
    r = client.post("/join/deals", data={"phone": "555", "consent": "yes", "token": token})
    assert r.status_code == 400 and "valid mobile number" in r.text
    assert outbox(container) == []


def test_join_form_signup_keeps_web_evidence(client: TestClient, container: Container) -> None:
    page = client.get("/join/deals", headers={"referer": "https://shop.example/checkout"})
    token = form_token(page.text)
    r = client.post(
        "/join/deals",
        data={"phone": "(415) 555-0134", "consent": "yes", "token": token},
        headers={"user-agent": "Browser/1.0", "referer": "https://shop.example/checkout"},
    )
    assert r.status_code == 200 and "Check your phone" in r.text and "0134" in r.text
    assert status_of(container, "+14155550134") is Status.PENDING
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, "+14155550134")
        [event] = ledger.history(conn, contact["id"])
    ev = event["evidence"]
    assert event["channel"] == "web"
    assert ev["ip"] == "testclient" and ev["user_agent"] == "Browser/1.0"
    assert (
        ev["source_url"] == "http://testserver/join/deals"
        and ev["referer"] == "https://shop.example/checkout"
    )
    assert ev["form_shown_at"] and ev["submitted_at"] and ev["shown_in"] == "https://shop.example/checkout"
    label = re.search(r'<label for="consent" id="disclosure">(.*?)</label>', page.text, re.S)
    assert label and re.sub(r"<[^>]+>", "", label.group(1)).replace("&amp;", "&") == ev["disclosure_text"]
    [prompt] = outbox(container)
    # The SMS asks for the yes in two segments; the disclosure the form showed is the evidence above.
    assert prompt.kind == "signup" and "Reply Y to confirm" in prompt.body
    assert segments.count(prompt.body).segments <= 2


def test_join_form_honeypot_and_ip_limit(client: TestClient, container: Container) -> None:
    token = form_token(client.get("/join/deals").text)
    r = client.post(
        "/join/deals",
        data={"phone": "4155550134", "consent": "yes", "token": token, "website": "http://spam.example"},
    )
    assert r.status_code == 200 and "Check your phone" in r.text  # a bot learns nothing
    assert outbox(container) == []
    limit = container.settings.join_signups_per_ip_per_hour
    for i in range(limit):
        phone = f"415555{1000 + i}"
        assert (
            client.post("/join/deals", data={"phone": phone, "consent": "yes", "token": token}).status_code
            == 200
        )
    r = client.post("/join/deals", data={"phone": "4155559999", "consent": "yes", "token": token})
    assert r.status_code == 429 and "Too many sign-ups" in r.text
    with container.db.read() as conn:
        assert len(conn.execute(select(signups)).all()) == limit


def test_join_form_refuses_cross_site_posts(client: TestClient, container: Container) -> None:
    token = form_token(client.get("/join/deals").text)
    data = {"phone": "(415) 555-0134", "consent": "yes", "token": token}
    r = client.post("/join/deals", data=data, headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post("/join/deals", data=data, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    client.cookies.clear()  # an embedded frame whose cookie the browser withheld …
    assert client.post("/join/deals", data=data).status_code == 403  # … and no word from the browser
    assert outbox(container) == []
    client.cookies.clear()  # (the refusal above offered a fresh cookie; the frame withholds it again)
    r = client.post("/join/deals", data=data, headers={"sec-fetch-site": "same-origin"})
    assert r.status_code == 200 and "Check your phone" in r.text  # the browser vouches it is our page
    assert len(outbox(container)) == 1


def test_join_form_for_a_program_name_that_needs_escaping(client: TestClient, container: Container) -> None:
    with container.db.transaction() as conn:
        create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="vip & friends?",
            brand="Acme Coffee",
        )
    page = client.get("/join/vip%20%26%20friends%3F")
    assert page.status_code == 200 and 'action="/join/vip%20%26%20friends%3F"' in page.text
    r = client.post(
        "/join/vip%20%26%20friends%3F",
        data={"phone": "4155550134", "consent": "yes", "token": form_token(page.text)},
    )
    assert r.status_code == 200 and "Check your phone" in r.text
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, "+14155550134")
        [event] = ledger.history(conn, contact["id"])
    assert event["evidence"]["source_url"] == "http://testserver/join/vip%20%26%20friends%3F"
