"""``PATCH /v1/programs/{name}`` (and creating the program it addresses) as a newcomer and an attacker would
use it, through the ASGI app on both engines: wrong types, unknown or no fields, huge values, an empty body,
invalid JSON and bytes that are not UTF-8 each get a 4xx naming what and where, change nothing, and never a
500; names with slashes are refused where they are made (they could never be addressed), unicode ones work;
two PATCHes of different settings at once both stick; the disclosure is changed as the program page does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db import api_keys
from optline.adapters.db.tables import disclosure_versions
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import programs as program_service
from tests.support import web

HELP = "https://acme.example/help"


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def auth(container: Container) -> dict[str, str]:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def program(container: Container) -> dict[str, Any]:
    return web.program(container)


def _stored(container: Container, name: str = "deals") -> dict[str, Any]:
    with container.db.read() as conn:
        found = program_service.get_program(conn, name)
    assert found is not None
    return found


def _versions(container: Container) -> list[tuple[int, str, bool]]:
    with container.db.read() as conn:
        rows = conn.execute(
            select(
                disclosure_versions.c.version, disclosure_versions.c.text, disclosure_versions.c.custom
            ).order_by(disclosure_versions.c.version)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


JSON = {"content-type": "application/json"}
BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"", 422, "Field required"),
    (b"null", 422, "valid dictionary"),
    (b"[]", 422, "valid dictionary"),
    (b'"optout_link"', 422, "valid dictionary"),
    (b"{not json", 422, "JSON decode error"),
    (b'{"optout_link": true', 422, "JSON decode error"),
    (b'{"optout_instruction": "\xff\xfe"}', 400, "not UTF-8: byte 0xff at offset 24"),
    (b"{}", 422, "nothing to change: give one of optout_link, optout_instruction, quiet_hours, disclosure"),
    (b'{"brand": "Evil"}', 422, "cannot change 'brand' with PATCH"),
    (b'{"optout_link": false, "name": "x"}', 422, "cannot change 'name' with PATCH"),
    (b'{"optout_link": "maybe"}', 422, "valid boolean"),
    (b'{"optout_link": 100000000000000000000000000000}', 422, "valid boolean"),
    (b'{"optout_link": null}', 422, "optout_link: true or false"),
    (b'{"optout_link": [true]}', 422, "valid boolean"),
    (b'{"optout_instruction": "never"}', 422, "'every' or 'monthly'"),
    (b'{"optout_instruction": null}', 422, "opt-out instruction: one of every, monthly"),
    (b'{"quiet_hours": "09:00-20:00"}', 422, "valid dictionary"),
    (b'{"quiet_hours": {"start": "09:00"}}', 422, "Field required"),
    (b'{"quiet_hours": {"start": "25:00", "end": "20:00"}}', 422, "sending window start '25:00'"),
    (b'{"quiet_hours": {"start": "07:00", "end": "20:00"}}', 422, "before 08:00"),
    (b'{"quiet_hours": {"start": "09:00", "end": "23:00"}}', 422, "21:00"),
    (b'{"quiet_hours": {"start": "' + b"9" * 100_000 + b'", "end": "20:00"}}', 422, "at most 5 characters"),
    (b'{"quiet_hours": {"start": "09:00\\u0000", "end": "20:00"}}', 422, "at most 5 characters"),
    (b'{"disclosure": "' + b"x" * 3000 + b'"}', 422, "at most 2000 characters"),
    (b'{"disclosure": "Join us \\u0000"}', 422, "should match pattern"),
    (b'{"disclosure": "Get deals!"}', 422, "the disclosure for 'deals' lacks"),
    (b'{"disclosure": 5}', 422, "valid string"),
    (b'{"optout_link": false, "disclosure": "Get deals!"}', 422, "lacks"),  # all or nothing
]


@pytest.mark.parametrize(
    "body, status, says", BAD_BODIES, ids=[b[:40].decode("latin-1") for b, _, _ in BAD_BODIES]
)
def test_a_bad_patch_is_a_clear_4xx_and_changes_nothing(
    container: Container,
    client: TestClient,
    auth: dict[str, str],
    program: dict[str, Any],
    body: bytes,
    status: int,
    says: str,
) -> None:
    before = _stored(container)
    r = client.patch("/v1/programs/deals", content=body, headers={**auth, **JSON})
    assert r.status_code == status, r.text
    assert says in r.text, r.text
    assert _stored(container) == before
    assert _versions(container) == []


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/programs/nope", 404),
        ("/v1/programs/%00", 422),
        ("/v1/programs/" + "x" * 101, 422),
        ("/v1/programs/deals%2Fother", 404),
        ("/v1/programs/%ff", 404),
    ],
)
def test_a_patch_of_a_program_that_is_not_there_is_a_4xx(
    client: TestClient, auth: dict[str, str], program: dict[str, Any], path: str, status: int
) -> None:
    r = client.patch(path, json={"optout_link": False}, headers=auth)
    assert r.status_code == status, r.text


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_a_patch_without_a_valid_key_changes_nothing(
    container: Container, client: TestClient, program: dict[str, Any], header: dict[str, str]
) -> None:
    before = _stored(container)
    r = client.patch("/v1/programs/deals", json={"optout_link": False}, headers=header)
    assert r.status_code == 401
    assert _stored(container) == before


def test_a_revoked_key_changes_nothing(
    container: Container, client: TestClient, program: dict[str, Any]
) -> None:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "gone", container.clock.now())
        key_id = next(k["id"] for k in api_keys.list_all(conn) if k["name"] == "gone")
        api_keys.revoke(conn, key_id, container.clock.now())
    r = client.patch(
        "/v1/programs/deals", json={"optout_link": False}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 401 and _stored(container)["settings"]["optout_link"] is True


def test_quiet_hours_null_removes_the_programs_window(
    container: Container, client: TestClient, auth: dict[str, str], program: dict[str, Any]
) -> None:
    r = client.patch(
        "/v1/programs/deals", json={"quiet_hours": {"start": "10:00", "end": "19:00"}}, headers=auth
    )
    assert r.status_code == 200 and r.json()["quiet_hours"] == {"start": "10:00", "end": "19:00"}
    r = client.patch("/v1/programs/deals", json={"quiet_hours": None}, headers=auth)
    assert r.status_code == 200 and r.json()["quiet_hours"] is None
    assert "quiet_hours" not in _stored(container)["settings"]


@pytest.mark.parametrize("name", ["deals/other", "a\\b", "tab\there", "/", "x" * 101, "   "])
def test_a_program_name_no_address_could_reach_is_refused_where_it_is_made(
    container: Container, client: TestClient, auth: dict[str, str], name: str
) -> None:
    r = client.post("/v1/programs", json={"name": name, "brand": "Acme", "help_contact": HELP}, headers=auth)
    assert r.status_code == 422, r.text
    with container.db.read() as conn:
        assert program_service.list_programs(conn) == []


def test_a_program_name_in_any_script_is_reached_percent_encoded(
    container: Container, client: TestClient, auth: dict[str, str]
) -> None:
    for name in ("café", "ελληνικά", "名前 with space", "100%", "a?b#c"):
        r = client.post(
            "/v1/programs", json={"name": name, "brand": "Acme", "help_contact": HELP}, headers=auth
        )
        assert r.status_code == 201, r.text
        from urllib.parse import quote

        r = client.patch(f"/v1/programs/{quote(name, safe='')}", json={"optout_link": False}, headers=auth)
        assert r.status_code == 200 and r.json()["name"] == name and r.json()["optout_link"] is False, r.text
    assert _stored(container, "café")["settings"]["optout_link"] is False


def test_two_patches_of_different_settings_at_once_both_stick(
    container: Container, client: TestClient, auth: dict[str, str], program: dict[str, Any]
) -> None:
    """Each PATCH writes the settings JSON whole: without the row lock (and the values read under it), the
    later one put back what the earlier one had changed (PostgreSQL's READ COMMITTED)."""
    bodies = [
        {"optout_link": False},
        {"optout_instruction": "monthly"},
        {"quiet_hours": {"start": "10:00", "end": "19:00"}},
        {"disclosure": DISCLOSURE},
    ]
    answers: list[int | str] = []

    def patch(body: dict[str, Any]) -> None:
        start.wait()
        r = client.patch("/v1/programs/deals", json=body, headers=auth)
        answers.append(r.status_code if r.status_code == 200 else r.text)

    threads = [threading.Thread(target=patch, args=(b,)) for b in bodies for _ in range(3)]
    start = threading.Barrier(len(threads))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * len(threads)
    settings = _stored(container)["settings"]
    assert settings["optout_link"] is False and settings["optout_instruction"] == "monthly"
    assert settings["quiet_hours"] == {"start": "10:00", "end": "19:00"}
    assert [custom for _, _, custom in _versions(container)] == [True]  # one new version, not three


def test_a_stale_copy_of_the_program_does_not_undo_a_change_made_since(
    container: Container, program: dict[str, Any]
) -> None:
    stale = _stored(container)  # what the route read, before another request's change committed
    with container.db.transaction() as conn:
        program_service.change_settings(conn, stale, optout_instruction="monthly")
    with container.db.transaction() as conn:
        program_service.change_settings(conn, stale, optout_link=False)
    settings = _stored(container)["settings"]
    assert settings["optout_instruction"] == "monthly" and settings["optout_link"] is False


DISCLOSURE = (
    "Acme Coffee deals: up to 4 msgs/week. Msg & data rates may apply. Reply HELP for help, STOP to cancel. "
    "Consent is not a condition of purchase."
)


def test_patch_changes_the_disclosure_as_a_new_version_only_when_its_text_changes(
    container: Container, client: TestClient, auth: dict[str, str], program: dict[str, Any]
) -> None:
    shown = client.get("/v1/programs/deals", headers=auth).json()
    assert shown["disclosure"] and shown["disclosure_version"] is None  # composed, not shown to anyone yet

    r = client.patch("/v1/programs/deals", json={"disclosure": DISCLOSURE}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["disclosure"] == DISCLOSURE and r.json()["disclosure_version"] == 1
    # The same text again (other spacing): no new version; another setting alongside still changes.
    again = client.patch(
        "/v1/programs/deals", json={"disclosure": "  " + DISCLOSURE.replace(" ", "\n", 3), "optout_link": False},
        headers=auth,
    )  # fmt: skip
    assert again.status_code == 200 and again.json()["disclosure_version"] == 1
    assert again.json()["optout_link"] is False
    assert _versions(container) == [(1, DISCLOSURE, True)]

    # null (or ""): back to the text composed from the program, as a new version.
    back = client.patch("/v1/programs/deals", json={"disclosure": None}, headers=auth)
    assert back.status_code == 200 and back.json()["disclosure"] == shown["disclosure"]
    assert back.json()["disclosure_version"] == 2
    assert _versions(container) == [(1, DISCLOSURE, True), (2, shown["disclosure"], False)]
    assert client.patch("/v1/programs/deals", json={"disclosure": ""}, headers=auth).status_code == 200
    assert len(_versions(container)) == 2  # already the composed text: nothing new

    # The list and the program page agree with the API.
    listed = client.get("/v1/programs", headers=auth).json()
    assert listed[0]["disclosure"] == shown["disclosure"] and listed[0]["disclosure_version"] == 2


def test_the_disclosure_set_by_patch_is_the_one_the_program_page_shows(
    container: Container, client: TestClient, auth: dict[str, str], program: dict[str, Any]
) -> None:
    assert (
        client.patch("/v1/programs/deals", json={"disclosure": DISCLOSURE}, headers=auth).status_code == 200
    )
    page = web.signed_in(container).get(f"/dashboard/programs/{program['id']}")
    assert DISCLOSURE.replace("&", "&amp;") in page.text


def test_the_confirmation_window_set_from_a_stale_copy_keeps_a_change_made_since(
    container: Container, program: dict[str, Any]
) -> None:
    from optline.services import signup

    stale = _stored(container)
    with container.db.transaction() as conn:
        program_service.change_settings(conn, stale, optout_link=False)
    with container.db.transaction() as conn:
        signup.set_window(conn, stale, 48)
    settings = _stored(container)["settings"]
    assert settings["optout_link"] is False and settings["signup_window_hours"] == 48
