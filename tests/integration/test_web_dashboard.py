"""The dashboard over HTTP on both engines: sessions, CSRF, every page on demo data, the review queue."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db.tables import consent_events, inbound_messages
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import demo, users

PASSWORD = "correct-horse-battery"
PAGES = [
    "/dashboard", "/dashboard/programs", "/dashboard/campaigns", "/dashboard/contacts",
    "/dashboard/review", "/dashboard/list-review", "/dashboard/simulator",
]  # fmt: skip


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


@pytest.fixture
def client(container: Container) -> TestClient:
    with container.db.transaction() as conn:
        users.create(conn, container.clock, "maria", PASSWORD)
    return TestClient(create_app(container))


def _login(client: TestClient, next_path: str = "/dashboard") -> str:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"username": "maria", "password": PASSWORD, "csrf": _csrf(page.text), "next": next_path},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def test_pages_need_a_session(client: TestClient) -> None:
    for path in PAGES:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/dashboard")
    assert client.post("/dashboard/demo", follow_redirects=False).headers["location"].startswith("/login")


def test_login_checks_password_csrf_and_only_redirects_locally(client: TestClient) -> None:
    page = client.get("/login")
    bad = client.post("/login", data={"username": "maria", "password": "nope", "csrf": _csrf(page.text)})
    assert bad.status_code == 401 and "don't match" in html.unescape(bad.text)
    no_csrf = client.post("/login", data={"username": "maria", "password": PASSWORD})
    assert no_csrf.status_code == 403
    assert _login(client, "//evil.example/x") == "/dashboard"
    assert _login(client, "https://evil.example") == "/dashboard"
    assert _login(client, "/dashboard/review") == "/dashboard/review"


def test_login_attempts_are_rate_limited(client: TestClient) -> None:
    csrf = _csrf(client.get("/login").text)
    codes = [
        client.post("/login", data={"username": "maria", "password": "wrong", "csrf": csrf}).status_code
        for _ in range(11)
    ]
    assert codes == [401] * 10 + [429]


def test_forms_need_the_session_csrf_token(container: Container, client: TestClient) -> None:
    _login(client)
    r = client.post("/dashboard/demo", data={"csrf": "forged"})
    assert r.status_code == 403
    r = client.post("/dashboard/programs", data={"name": "x", "brand": "y"})
    assert r.status_code == 403
    with container.db.read() as conn:
        assert demo.program_service.get_program(conn, demo.PROGRAM) is None
        assert demo.program_service.get_program(conn, "x") is None


def test_empty_database_guides_then_demo_fills_every_page(container: Container, client: TestClient) -> None:
    _login(client)
    welcome = client.get("/dashboard")
    assert "Welcome to optline" in welcome.text and "Load demo data" in welcome.text
    r = client.post("/dashboard/demo", data={"csrf": _csrf(welcome.text)}, follow_redirects=False)
    assert r.headers["location"] == "/dashboard?flash=demo"
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    overview = client.get("/dashboard").text
    assert "Opt-out trend" in overview and 'class="chart wide"' in overview
    campaigns = client.get("/dashboard/campaigns").text
    assert "Weekend 2-for-1 lattes" in campaigns and "Autumn blend launch" in campaigns
    assert campaigns.count('class="spike-row"') == 1  # the pushy campaign stands out, the normal one doesn't
    simulator = client.get("/dashboard/simulator").text
    assert "Bluebird Coffee: Our autumn blend is here" in simulator or "LAST CHANCE" in simulator
    # Loading twice is refused politely.
    again = client.post("/dashboard/demo", data={"csrf": _csrf(overview)}, follow_redirects=False)
    assert again.headers["location"] == "/dashboard"


def test_contact_lookup_shows_ledger_and_messages(container: Container, client: TestClient) -> None:
    demo.load(container, contacts=60)
    _login(client)
    with container.db.read() as conn:
        phone = conn.execute(
            select(inbound_messages.c.from_phone).where(inbound_messages.c.intent == "optout").limit(1)
        ).scalar_one()
    national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    page = client.get("/dashboard/contacts", params={"phone": national})
    assert page.status_code == 200 and f"+1 {phone[2:5]}-{phone[5:8]}-{phone[8:]}" in page.text
    assert (
        "opt out" in page.text and "opt in" in page.text and "received" in page.text and "sent" in page.text
    )
    missing = client.get("/dashboard/contacts", params={"phone": "+12125550000"})
    assert "No contact with the number" in missing.text
    garbage = client.get("/dashboard/contacts", params={"phone": "not a phone"})
    assert "doesn't look like a phone number" in html.unescape(garbage.text)


def test_review_decisions_are_ledger_events_by_the_operator(container: Container, client: TestClient) -> None:
    demo.load(container, contacts=60)
    _login(client)
    page = client.get("/dashboard/review")
    ids = [int(i) for i in re.findall(r'action="/dashboard/review/(\d+)"', page.text)]
    assert len(ids) >= 2
    csrf = _csrf(page.text)
    r1 = client.post(
        f"/dashboard/review/{ids[0]}", data={"csrf": csrf, "decision": "opt_out"}, follow_redirects=False
    )
    r2 = client.post(
        f"/dashboard/review/{ids[1]}", data={"csrf": csrf, "decision": "not_opt_out"}, follow_redirects=False
    )
    assert r1.status_code == r2.status_code == 303
    twice = client.post(f"/dashboard/review/{ids[0]}", data={"csrf": csrf, "decision": "not_opt_out"})
    assert twice.status_code == 409 and "already decided" in twice.text
    with container.db.read() as conn:
        events = conn.execute(
            select(consent_events.c.action, consent_events.c.evidence)
            .where(consent_events.c.channel == "admin")
            .order_by(consent_events.c.id)
        ).all()
        decided = (
            conn.execute(
                select(inbound_messages.c.id).where(inbound_messages.c.review_decided_at.is_not(None))
            )
            .scalars()
            .all()
        )
    assert [e.action for e in events] == ["opt_out", "review_cleared"]
    assert {e.evidence["operator"] for e in events} == {"maria"}
    assert sorted(decided) == sorted(ids[:2])
    assert f'action="/dashboard/review/{ids[0]}"' not in client.get("/dashboard/review").text


def test_create_program_from_the_dashboard(container: Container, client: TestClient) -> None:
    _login(client)
    csrf = _csrf(client.get("/dashboard/programs").text)
    bad = client.post(
        "/dashboard/programs",
        data={
            "csrf": csrf,
            "help_contact": "help@acme.example",
            "name": "deals",
            "brand": "Acme",
            "sender": "12",
        },
    )
    assert bad.status_code == 400 and "Sender number" in bad.text
    ok = client.post(
        "/dashboard/programs",
        data={
            "csrf": csrf,
            "help_contact": "help@acme.example",
            "name": "deals",
            "brand": "Acme",
            "sender": "(415) 555-0100",
            "scope": "program",
        },
        follow_redirects=False,
    )
    assert ok.status_code == 303
    listing = client.get("/dashboard/programs").text
    assert "deals" in listing and "+1 415-555-0100" in listing and "this program only" in listing
    dup = client.post(
        "/dashboard/programs",
        data={"csrf": csrf, "help_contact": "help@acme.example", "name": "deals", "brand": "Acme"},
    )
    assert dup.status_code == 400 and "already exists" in dup.text


def test_one_time_password_must_be_changed_first(container: Container) -> None:
    with container.db.transaction() as conn:
        name, password = users.create_first_admin(conn, container.clock) or ("", "")
        assert users.create_first_admin(conn, container.clock) is None  # only on the very first run
    client = TestClient(create_app(container))
    csrf = _csrf(client.get("/login").text)
    r = client.post(
        "/login", data={"username": name, "password": password, "csrf": csrf}, follow_redirects=False
    )
    assert r.headers["location"] == "/account/password"
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/account/password"
    form = client.get("/account/password").text
    short = client.post(
        "/account/password",
        data={"csrf": _csrf(form), "current": password, "new": "short", "confirm": "short"},
    )
    assert short.status_code == 400 and "at least 10" in short.text
    ok = client.post(
        "/account/password",
        data={"csrf": _csrf(form), "current": password, "new": PASSWORD, "confirm": PASSWORD},
        follow_redirects=False,
    )
    assert ok.headers["location"] == "/dashboard?flash=password"
    assert client.get("/dashboard").status_code == 200


def test_logout_ends_the_session(client: TestClient) -> None:
    _login(client)
    page = client.get("/dashboard")
    client.post("/logout", data={"csrf": _csrf(page.text)})
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_import_contacts_from_the_dashboard(container: Container, client: TestClient) -> None:
    _login(client)
    csrf = _csrf(client.get("/dashboard/programs").text)
    client.post(
        "/dashboard/programs",
        data={"csrf": csrf, "help_contact": "help@acme.example", "name": "deals", "brand": "Acme"},
    )
    page = client.get("/dashboard/programs").text
    action = re.search(r'action="(/dashboard/programs/\d+/import)"', page)
    assert action
    csv = b"phone,consented_at,consent_source\n(415) 555-0134,2024-01-01,web form\n(415) 555-0135,2024-01-02,web form\nnope,,\n"
    r = client.post(action.group(1), data={"csrf": csrf}, files={"file": ("list.csv", csv, "text/csv")})
    assert r.status_code == 200, r.text
    text = html.unescape(r.text)
    assert "Imported list.csv into deals" in text and "Rejected" in text
    assert re.search(r"<dt>Consent recorded \(opt-in events\)</dt><dd>2</dd>", r.text) and re.search(
        r"<dt>Rejected</dt><dd>1</dd>", r.text
    )
    forged = client.post(action.group(1), data={"csrf": "x"}, files={"file": ("list.csv", csv, "text/csv")})
    assert forged.status_code == 403


def test_reply_as_a_contact_through_the_simulator(container: Container, client: TestClient) -> None:
    from tests.support import web

    prog = web.program(container)
    person = web.subscriber(container, prog)
    _login(client)
    page = client.get("/dashboard/simulator")
    assert 'name="to"' in page.text and "+1 415-555-0100" in page.text
    csrf = _csrf(page.text)
    bad = client.post(
        "/dashboard/simulator/reply", data={"csrf": csrf, "from": "12", "to": "+14155550100", "body": "hi"}
    )
    assert bad.status_code == 400 and "From:" in bad.text
    forged = client.post(
        "/dashboard/simulator/reply",
        data={"csrf": "x", "from": person["phone"], "to": "+14155550100", "body": "STOP"},
    )
    assert forged.status_code == 403
    r = client.post(
        "/dashboard/simulator/reply",
        data={"csrf": csrf, "from": "(415) 555-0134", "to": "+14155550100", "body": "STOP"},
    )
    assert r.status_code == 200 and "Understood as opt-out" in r.text and "STOP" in r.text
    with container.db.read() as conn:
        statuses = conn.execute(
            select(consent_events.c.action, consent_events.c.channel).where(
                consent_events.c.contact_id == person["id"]
            )
        ).all()
    assert ("opt_out", "sms_keyword") in [tuple(s) for s in statuses]


def test_list_review_runs_from_the_dashboard(container: Container, client: TestClient) -> None:
    demo.load(container, contacts=40)
    _login(client)
    page = client.get("/dashboard/list-review")
    assert "No list review yet" in page.text
    assert client.post("/dashboard/list-review", data={"csrf": "x"}).status_code == 403
    r = client.post("/dashboard/list-review", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert r.headers["location"] == "/dashboard/list-review?flash=audit"
    shown = client.get("/dashboard/list-review").text
    assert "Checked" in shown and "(dashboard)" in shown and "No list review yet" not in shown
