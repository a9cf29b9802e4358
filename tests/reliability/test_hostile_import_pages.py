"""The contacts-import pages as a newcomer and an attacker would use them (``/dashboard/imports``, one
import's page, its rejects CSV, the upload), through the ASGI app on both engines: hand-edited ids and
paging cursors (negative, past 64 bits, not numbers) get a 422 that names the parameter, never a 500;
nobody signed out sees anything; an upload without the form token imports nothing; every cell of the
rejects CSV that a spreadsheet would run as a formula is inert."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from optline.adapters.db.tables import contacts, imports
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from tests.support import web

HUGE = 10**30
FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://evil.example")']


@pytest.fixture
def client(container: Container) -> TestClient:
    signed = web.signed_in(container)
    # Every answer is looked at, a 500 included (the default client raises instead).
    return TestClient(signed.app, raise_server_exceptions=False, cookies=signed.cookies)


def _upload(client: TestClient, program_id: int, body: bytes, name: str = "list.csv") -> Any:
    csrf = web.csrf(client.get("/dashboard/programs").text)
    return client.post(
        f"/dashboard/programs/{program_id}/import",
        data={"csrf": csrf},
        files={"file": (name, body, "text/csv")},
    )


@pytest.fixture
def import_id(container: Container, client: TestClient) -> int:
    prog = web.program(container)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["phone", "name", "=cmd|' /C calc'!A0"])  # a header cell is written back too
    writer.writerow(["4155550134", "Ann", "ok"])
    for i, cell in enumerate(FORMULAS):
        writer.writerow([f"not a phone {i}", cell, cell])
    r = _upload(client, prog["id"], out.getvalue().encode())
    assert r.status_code == 200, r.text
    m = re.fullmatch(r"/dashboard/imports/(\d+)", r.url.path)
    assert m, r.url
    return int(m.group(1))


def _bad_addresses(import_id: int) -> list[tuple[str, str]]:
    """(address, the parameter the answer must name)."""
    cases = []
    for value in ("-1", "0", str(HUGE), "abc", "1.5", "%00", "%ff"):
        cases += [
            (f"/dashboard/imports/{value}", "import_id"),
            (f"/dashboard/imports/{value}/rejects.csv", "import_id"),
        ]
    for value in ("-1", str(HUGE), "x", "", "%00", "1e3"):
        cases += [
            (f"/dashboard/imports/{import_id}?after={value}", "after"),
            (f"/dashboard/imports?before={value}", "before"),
        ]
    cases.append((f"/dashboard/imports/{import_id}?after={2**31}", "after"))  # lines are 32-bit
    cases += [(f"/dashboard/programs/{HUGE}", "program_id"), (f"/dashboard/campaigns/{HUGE}", "campaign_id")]
    cases += [(f"/dashboard/contacts?after={HUGE}", "after"), ("/dashboard/campaigns/1?after=-5", "after")]
    return cases


def test_hand_edited_ids_and_cursors_get_a_422_naming_the_parameter(
    client: TestClient, import_id: int
) -> None:
    for address, parameter in _bad_addresses(import_id):
        r = client.get(address)
        assert r.status_code == 422, (address, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/plain"), address
        assert f"{parameter} in the address" in r.text, (address, r.text)
        assert "(got " in r.text, (address, r.text)


def test_the_largest_id_the_database_keeps_is_a_plain_404(client: TestClient, import_id: int) -> None:
    top = 2**63 - 1
    assert client.get(f"/dashboard/imports/{top}").status_code == 404
    assert client.get(f"/dashboard/imports/{top}/rejects.csv").status_code == 404
    assert client.get(f"/dashboard/imports?before={top}").status_code == 200
    r = client.get(f"/dashboard/imports/{import_id}?after={2**31 - 1}")
    assert r.status_code == 200 and 'rel="next"' not in r.text  # past the last line: nothing more


def test_an_upload_to_a_program_id_past_64_bits_is_a_422_and_imports_nothing(
    container: Container, client: TestClient
) -> None:
    r = _upload(client, HUGE, b"phone\n4155550134\n")
    assert r.status_code == 422 and "program_id in the address" in r.text
    r = _upload(client, 2**63 - 1, b"phone\n4155550134\n")
    assert r.status_code == 404
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0


def test_an_upload_without_its_form_token_imports_nothing(container: Container, client: TestClient) -> None:
    prog = web.program(container)
    for data in ({}, {"csrf": "forged"}):
        r = client.post(
            f"/dashboard/programs/{prog['id']}/import",
            data=data,
            files={"file": ("list.csv", b"phone\n4155550134\n", "text/csv")},
        )
        assert r.status_code == 403, r.status_code
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(imports)).scalar_one() == 0


def test_signed_out_nobody_sees_an_import_or_its_rejects(container: Container, import_id: int) -> None:
    anonymous = TestClient(create_app(container), raise_server_exceptions=False)
    for address in (
        "/dashboard/imports",
        f"/dashboard/imports/{import_id}",
        f"/dashboard/imports/{import_id}/rejects.csv",
        "/dashboard/imports/abc",  # the login comes before the address is read: nothing about it leaks
        f"/dashboard/imports/{HUGE}/rejects.csv",
    ):
        r = anonymous.get(address, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), address
    # A cookie from another installation (another secret key) is no session here.
    forged = TestClient(create_app(container), cookies={"optline_session": "eyJ1c2VyX2lkIjogMX0=.x.y"})
    r = forged.get(f"/dashboard/imports/{import_id}/rejects.csv", follow_redirects=False)
    assert r.status_code == 303


def test_every_formula_cell_of_the_rejects_csv_is_inert(client: TestClient, import_id: int) -> None:
    r = client.get(f"/dashboard/imports/{import_id}/rejects.csv")
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["line", "reason", "phone", "name", "'=cmd|'_/c_calc'!a0"]  # normalised, inert
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    by_line = {int(row[0]): row for row in rows[1:]}
    for i, cell in enumerate(FORMULAS):
        assert by_line[3 + i][3:] == ["'" + cell, "'" + cell], by_line[
            3 + i
        ]  # the value kept, behind a quote


@pytest.mark.parametrize("encoding", ["utf\x00-8", "hex", "rot13", "base64", "zlib", "undefined", "x" * 5000])
def test_an_encoding_no_csv_can_be_read_in_is_refused_by_name(
    container: Container, client: TestClient, encoding: str
) -> None:
    """Python knows codecs that are not text encodings (bytes to bytes) and refuses a NUL in a codec's name:
    each was a 500; now the upload page names the encoding (cut short) and imports nothing."""
    prog = web.program(container)
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog['id']}/import",
        data={"csrf": csrf, "encoding": encoding},
        files={"file": ("list.csv", b"phone\n4155550134\n", "text/csv")},
    )
    assert r.status_code == 400, r.status_code
    assert "list.csv: unknown encoding" in r.text and "x" * 41 not in r.text
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0
