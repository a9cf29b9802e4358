"""The dashboard's contacts upload never answers 500: refused files and database failures are pages that say
what happened to which lines (driven through the ASGI app, on both engines)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.services import consent, users
from tests.support import web

PASSWORD = "correct horse battery"
FILE = "phone,first_name,consented_at,consent_source\n(415) 555-0134,José,2024-01-01,web\n4155550135,Zoë,,\n"


@pytest.fixture
def upload(container: Container) -> Any:
    with container.db.transaction() as conn:
        users.create(conn, container.clock, "maria", PASSWORD)
    prog = web.program(container)
    client = TestClient(create_app(container), raise_server_exceptions=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post(
        "/login", data={"username": "maria", "password": PASSWORD, "csrf": csrf, "next": "/dashboard"}
    )
    page = client.get("/dashboard/programs").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert 'name="encoding"' in page and 'value="cp1252"' in page

    def post(data: bytes, **form: str) -> Any:
        r = client.post(
            f"/dashboard/programs/{prog['id']}/import",
            data={"csrf": csrf, **form},
            files={"file": ("list.csv", data, "text/csv")},
        )
        r.page = html.unescape(r.text)
        return r

    return post


def stored(container: Container) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(contacts)).scalar_one())


def test_cp1252_is_refused_until_named_then_read(container: Container, upload: Any) -> None:
    refused = upload(FILE.encode("cp1252"))
    assert refused.status_code == 400
    assert "list.csv: line 2, character 19: byte 0xe9 is not valid UTF-8" in refused.page
    assert "cp1252" in refused.page and "nothing was imported" in refused.page
    assert stored(container) == 0
    ok = upload(FILE.encode("cp1252"), encoding="cp1252")
    assert ok.status_code == 200 and "Imported list.csv" in ok.page
    assert stored(container) == 2


def test_utf16_with_bom_needs_no_choice(container: Container, upload: Any) -> None:
    r = upload(FILE.encode("utf-16"))
    assert r.status_code == 200 and re.search(r"<dt>Rows read</dt><dd>2</dd>", r.text)


def test_hostile_files_get_a_clear_error_never_500(container: Container, upload: Any) -> None:
    binary = upload(bytes(range(256)) * 64)
    assert binary.status_code == 400 and "NUL character" in binary.page
    long_line = upload(b"phone\n" + b"4" * (2 << 20))
    assert long_line.status_code == 400 and "line 2: longer than 1,048,576 characters" in long_line.page
    unknown = upload(FILE.encode(), encoding="klingon")
    assert unknown.status_code == 400 and "unknown encoding 'klingon'" in unknown.page
    assert stored(container) == 0


def test_a_database_failure_midway_is_a_page_not_a_500(
    container: Container, upload: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_goes_away(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT INTO consent_events …", {}, Exception("server closed the connection"))

    monkeypatch.setattr(consent, "record_opt_ins", database_goes_away)
    r = upload(FILE.encode())
    assert r.status_code == 503
    assert "the database failed while importing lines 2–" in r.page and "nothing was imported" in r.page
    assert stored(container) == 0
