"""Finding people and exporting lists from the dashboard, on both engines: search by phone in any spelling,
by name or attribute, filters, keyset pages; the CSV exports (streamed, formulas escaped) opened with csv."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import audit, contact_search
from tests.support import outbound, web


@pytest.fixture
def client(container: Container) -> TestClient:
    return web.signed_in(container)


@pytest.fixture
def people(container: Container) -> dict[str, Any]:
    program, ids = outbound.seed(container, 6)
    with container.db.transaction() as conn:
        outbound.opt_out(conn, container.clock, program, ids[1])
        conn.execute(
            update(contacts)
            .where(contacts.c.id == ids[2])
            .values(attributes={"first_name": "Ana", "last_name": "Lima", "tier": "Gold"})
        )
        conn.execute(
            update(contacts)
            .where(contacts.c.id == ids[3])
            .values(attributes={"first_name": '=HYPERLINK("http://x")', "tier": "silver"})
        )
    return {"program": program, "ids": ids, "phones": [outbound.phone(i) for i in range(6)]}


def _search(container: Container, **kw: Any) -> list[str]:
    with container.db.read() as conn:
        rows, _ = contact_search.search(conn, contact_search.Query(**kw), "US")
    return [r["phone"] for r in rows]


def test_search_by_phone_in_any_spelling_name_attribute_and_status(
    container: Container, people: dict[str, Any]
) -> None:
    phones = people["phones"]
    national = phones[4][2:]  # +12122000004 -> 2122000004
    for spelling in (
        f"({national[:3]}) {national[3:6]}-{national[6:]}",
        f"1.{national[:3]}.{national[3:6]}.{national[6:]}",
        phones[4],
        f"+1 {national}",
    ):
        assert _search(container, text=spelling) == [phones[4]], spelling
    assert _search(container, text="ana") == [phones[2]]  # a name, case-insensitive
    assert _search(container, text="ana lima") == [phones[2]]  # first and last
    assert _search(container, text="tier=gold") == [phones[2]]  # an attribute, exactly
    assert _search(container, text="tier: SILVER") == [phones[3]]
    assert _search(container, text="100%_") == []  # LIKE wildcards are literal
    assert _search(container, status="unsubscribed") == [phones[1]]
    assert len(_search(container, program_id=int(people["program"]["id"]), status="subscribed")) == 5
    assert _search(container, program_id=999) == []
    with pytest.raises(contact_search.SearchError, match="unknown status 'gone'"):
        _search(container, status="gone")


def test_keyset_pages_cover_everyone_once(container: Container, people: dict[str, Any]) -> None:
    seen: list[str] = []
    after: int | None = 0
    while after is not None:
        with container.db.read() as conn:
            rows, after = contact_search.search(conn, contact_search.Query(), "US", after=after, limit=4)
        seen += [r["phone"] for r in rows]
    assert sorted(seen) == sorted(people["phones"]) and len(seen) == len(set(seen))


def test_the_contacts_page_finds_by_name_and_shows_the_person(
    client: TestClient, people: dict[str, Any]
) -> None:
    page = client.get("/dashboard/contacts", params={"q": "Lima"})
    text = web.page_text(page.text)
    assert page.status_code == 200 and "Ana Lima" in text and "deals: subscribed" in text
    person = client.get("/dashboard/contacts", params={"q": people["phones"][1]})
    text = web.page_text(person.text)
    assert "unsubscribed" in text and "ledger #" in text  # the person's page: the ledger timeline
    assert "Nobody matches" in web.page_text(client.get("/dashboard/contacts", params={"q": "zzz"}).text)
    assert "unknown status" in web.page_text(
        client.get("/dashboard/contacts", params={"status": "gone"}).text
    )


def _csv(client: TestClient, path: str, **params: str) -> list[dict[str, str]]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert (
        r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    )
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))


def test_exports_open_as_csv_with_formulas_escaped(
    container: Container, client: TestClient, people: dict[str, Any]
) -> None:
    rows = _csv(client, "/dashboard/export/contacts.csv")
    assert len(rows) == 6 and {r["program"] for r in rows} == {"deals"}
    by_phone = {r["phone"].lstrip("'"): r for r in rows}
    assert all(r["phone"].startswith("'+") for r in rows)  # "+1…" starts like a formula: escaped
    assert by_phone[people["phones"][3]]["name"] == '\'=HYPERLINK("http://x")'
    assert by_phone[people["phones"][1]]["status"] == "unsubscribed"
    assert json.loads(by_phone[people["phones"][2]]["attributes"])["tier"] == "Gold"
    assert len(_csv(client, "/dashboard/export/contacts.csv", q="ana")) == 1  # the search's rows only

    optouts = _csv(client, "/dashboard/export/optouts.csv")
    assert len(optouts) == 1 and optouts[0]["channel"] == "sms_keyword" and optouts[0]["program"] == "deals"
    assert json.loads(optouts[0]["evidence"]) == {"message_text": "STOP"}

    assert _csv(client, "/dashboard/export/findings.csv") == []  # no review yet: the header only
    with container.db.transaction() as conn:  # a "number" that is a formula on the list: a finding
        conn.execute(update(contacts).where(contacts.c.id == people["ids"][5]).values(phone="=2+3"))
    audit.run(container.db, container.clock, audit.config_from(container.settings), trigger="dashboard")
    findings = _csv(client, "/dashboard/export/findings.csv")
    assert [(f["reason"], f["phone"]) for f in findings] == [("invalid_number", "'=2+3")]
    assert findings[0]["detail"] and findings[0]["action"]

    report = _csv(client, "/dashboard/export/report.csv")
    assert all(float(r["rate"] or 0) <= 1 for r in report)
    assert client.get("/dashboard/export/secrets.csv").status_code == 404
    anonymous = TestClient(create_app(container))
    assert anonymous.get("/dashboard/export/contacts.csv", follow_redirects=False).status_code == 303


def test_list_review_applies_fixes_after_confirmation_and_flags_a_stale_result(
    container: Container, client: TestClient, people: dict[str, Any]
) -> None:
    csrf = web.csrf(client.get("/dashboard/list-review").text)
    assert (
        client.post("/dashboard/list-review", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    )
    assert 'data-testid="stale"' not in client.get("/dashboard/list-review").text
    container.clock.advance(seconds=5)  # type: ignore[attr-defined]
    with container.db.transaction() as conn:  # the data changes after the review
        outbound.insert_contacts(conn, container.clock.now(), 100, 1)
    assert 'data-testid="stale"' in client.get("/dashboard/list-review").text  # never a stale "clean"
    unconfirmed = client.post("/dashboard/list-review", data={"csrf": csrf, "fix": "yes"})
    assert unconfirmed.status_code == 400 and "Tick the confirmation" in web.page_text(unconfirmed.text)
    with container.db.read() as conn:
        assert audit.latest_run(conn).fix is False  # type: ignore[union-attr]
    r = client.post(
        "/dashboard/list-review", data={"csrf": csrf, "fix": "yes", "confirm": "yes"}, follow_redirects=False
    )
    assert r.status_code == 303
    with container.db.read() as conn:
        assert audit.latest_run(conn).fix is True  # type: ignore[union-attr]
    assert 'data-testid="stale"' not in client.get("/dashboard/list-review").text
