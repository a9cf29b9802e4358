"""The import results page and its rejects CSV, through the ASGI app on both engines: every rejected row with
its line and reason, cells escaped on the page and in the CSV, paginated; the imports list links to each."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import programs
from optline.bootstrap import Container
from optline.services import contacts_import, imports
from tests.support import web

BAD = imports.PAGE_ROWS + 20  # more rejected rows than one page holds
ROWS = (
    ["phone,name,consented_at,consent_source", "(415) 555-0134,Ann,2024-01-01,web"]
    + [f"not a phone {i},Bad {i},," for i in range(BAD - 3)]
    + [
        "<script>alert(1)</script>,Eve,,",  # escaped on the page
        '4155550135,"=HYPERLINK(""http://evil.example"",""x"")",2024-01-01,web,extra',  # a formula cell
        "+1 415 555 0134,Ann again,,",  # a duplicate of line 2
    ]
)
FILE = ("\n".join(ROWS) + "\n").encode()


@pytest.fixture
def client(container: Container) -> TestClient:
    return web.signed_in(container)


@pytest.fixture
def uploaded(container: Container, client: TestClient) -> Any:
    prog = web.program(container)
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog['id']}/import",
        data={"csrf": csrf},
        files={"file": ("list.csv", FILE, "text/csv")},
    )
    assert r.status_code == 200, r.text
    m = re.fullmatch(r"/dashboard/imports/(\d+)", r.url.path)
    assert m, r.url  # post/redirect/get: the import's own page
    return r, int(m.group(1))


def test_the_results_page_lists_every_rejected_row_with_line_and_reason(
    client: TestClient, uploaded: Any
) -> None:
    r, import_id = uploaded
    text = web.page_text(r.text)
    assert "Imported list.csv into deals" in text and "By maria (dashboard)" in text
    assert f'href="/dashboard/imports/{import_id}/rejects.csv" download>Download rejects CSV' in r.text
    assert re.search(r"<dt>Rows read</dt><dd>121</dd>", r.text) and re.search(
        r"<dt>Rejected</dt><dd>120</dd>", r.text
    )
    first = re.findall(r'<td data-label="Line" class="num">(\d+)</td>', r.text)
    assert first == [str(n) for n in range(3, 3 + imports.PAGE_ROWS)]
    assert "bad phone number" in text and f"Next rows (after line {imports.PAGE_ROWS + 2})" in text
    # The accepted columns come from the importer's own definitions.
    for column in (
        *contacts_import.PHONE_COLUMNS,
        *contacts_import.CONSENT_COLUMNS,
        *contacts_import.CONTACT_COLUMNS,
    ):
        assert f"<code>{column}</code>" in r.text

    nxt = re.search(r'<a rel="next" href="([^"]+)"', r.text)
    assert nxt
    rest = client.get(html.unescape(nxt.group(1)))
    lines = re.findall(r'<td data-label="Line" class="num">(\d+)</td>', rest.text)
    assert lines == [str(n) for n in range(3 + imports.PAGE_ROWS, 3 + BAD)]  # the rest, none twice
    rest_text = web.page_text(rest.text)
    assert (
        "<script>alert(1)</script>" not in rest.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in rest.text
    )
    assert "phone=<script>alert(1)</script>" in rest_text  # each cell beside its column
    assert "duplicate: phone +14155550134 is already on line 2" in rest_text
    assert "too many columns: 5 fields for 4 header columns" in rest_text and "(extra)=extra" in rest_text
    assert 'rel="next"' not in rest.text


def test_the_rejects_csv_is_the_clis_format_escaped_and_in_line_order(
    client: TestClient, uploaded: Any
) -> None:
    _, import_id = uploaded
    r = client.get(f"/dashboard/imports/{import_id}/rejects.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="list.rejects.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["line", "reason", "phone", "name", "consented_at", "consent_source"]
    assert [int(row[0]) for row in rows[1:]] == list(range(3, 3 + BAD))
    by_line = {int(row[0]): row for row in rows[1:]}
    formula = by_line[BAD + 1]
    assert formula[3] == '\'=HYPERLINK("http://evil.example","x")'  # inert in a spreadsheet
    assert formula[2:] == ["4155550135", formula[3], "2024-01-01", "web", "extra"]
    assert by_line[BAD + 2][1:3] == ["duplicate: phone +14155550134 is already on line 2", "'+1 415 555 0134"]
    assert by_line[3][2:4] == ["not a phone 0", "Bad 0"]


def test_the_imports_list_links_to_each_import(
    container: Container, client: TestClient, uploaded: Any
) -> None:
    _, import_id = uploaded
    page = client.get("/dashboard/imports")
    assert page.status_code == 200
    assert f'<a href="/dashboard/imports/{import_id}">list.csv</a>' in page.text
    assert "maria" in web.page_text(page.text) and 'id="columns"' in page.text
    assert client.get("/dashboard/imports/999999").status_code == 404
    assert client.get("/dashboard/imports/999999/rejects.csv").status_code == 404


def test_a_refused_file_is_listed_with_its_reason(container: Container, client: TestClient) -> None:
    prog = web.program(container)
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog['id']}/import",
        data={"csrf": csrf},
        files={"file": ("names.csv", b"name\nAnn\n", "text/csv")},
    )
    assert r.status_code == 400 and "no phone column" in html.unescape(r.text)
    listed = web.page_text(client.get("/dashboard/imports").text)
    assert "names.csv" in listed and "refused" in listed


def test_the_rejects_csv_fixed_imports_again_as_the_original_would(
    container: Container, client: TestClient, uploaded: Any
) -> None:
    _, import_id = uploaded
    rows = list(
        csv.reader(
            io.StringIO(client.get(f"/dashboard/imports/{import_id}/rejects.csv").text.lstrip("\ufeff"))
        )
    )
    by_line = {row[0]: row[2:] for row in rows[1:]}
    fixed = [
        rows[0][2:],
        ["(415) 555-0199", *by_line["3"][1:]],
        by_line[str(BAD + 1)][:4],
    ]  # a number; no extra
    out = io.StringIO()
    csv.writer(out).writerows(fixed)
    with container.db.read() as conn:
        prog_id = conn.execute(select(programs.c.id)).scalar_one()
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog_id}/import",
        data={"csrf": csrf},
        files={"file": ("list.rejects.csv", out.getvalue().encode(), "text/csv")},
    )
    assert re.search(r"<dt>Contacts created</dt><dd>2</dd>", r.text) and re.search(
        r"<dt>Rejected</dt><dd>0</dd>", r.text
    )
    with container.db.read() as conn:
        formula = contact_repo.get_by_phone(conn, "+14155550135")
    assert formula is not None and formula["attributes"]["name"] == '=HYPERLINK("http://evil.example","x")'


def test_the_page_says_when_the_retention_purge_deleted_the_rejected_rows(
    container: Container, client: TestClient, uploaded: Any
) -> None:
    from optline.services import retention

    _, import_id = uploaded
    container.clock.advance(days=91)
    deleted, purged = retention.purge_import_rejects(container.db, container.clock, 90)
    assert deleted == BAD and purged == 1
    again = web.signed_in(container, "ana")  # maria's session of 91 days ago has expired
    text = web.page_text(again.get(f"/dashboard/imports/{import_id}").text)
    assert (
        "The rejected and held rows were deleted on" in text
        and "OPTLINE_IMPORT_REJECTS_RETENTION_DAYS" in text
    )
    assert "No rows were rejected" not in text


def test_a_rejects_csv_imported_again_as_it_is_keeps_no_line_or_reason_attributes(
    container: Container, client: TestClient, uploaded: Any
) -> None:
    """Downloaded, one cell fixed, uploaded again with its ``line`` and ``reason`` columns still first: those
    two are recognised as the rejects file's own and ignored (a note says so), the rest imports as usual,
    and the rows still rejected come back in a rejects file of the same shape."""
    _, import_id = uploaded
    download = client.get(f"/dashboard/imports/{import_id}/rejects.csv")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8"), newline="")))  # BOM kept
    assert rows[0][0] == "\ufeffline" and rows[0][1:] == [
        "reason",
        "phone",
        "name",
        "consented_at",
        "consent_source",
    ]
    fixed = [row for row in rows if row[0] in (rows[0][0], "3", "4", str(BAD + 1))]
    fixed[1][2] = "(415) 555-0199"  # line 3's number, fixed; line 4 stays wrong
    fixed[3] = fixed[3][:6]  # the formula row without its extra cell
    out = io.StringIO()
    csv.writer(out).writerows(fixed)
    with container.db.read() as conn:
        prog_id = conn.execute(select(programs.c.id)).scalar_one()
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog_id}/import",
        data={"csrf": csrf},
        files={"file": ("list.rejects.csv", out.getvalue().encode("utf-8"), "text/csv")},
    )
    assert r.status_code == 200, r.text
    text = web.page_text(r.text)
    assert f"Note: {contacts_import.REJECTS_NOTE}." in text
    assert re.search(r"<dt>Contacts created</dt><dd>2</dd>", r.text) and re.search(
        r"<dt>Rejected</dt><dd>1</dd>", r.text
    )
    with container.db.read() as conn:
        fixed_contact = contact_repo.get_by_phone(conn, "+14155550199")
        formula = contact_repo.get_by_phone(conn, "+14155550135")
    assert fixed_contact is not None and fixed_contact["attributes"] == {"name": "Bad 0"}
    assert formula is not None and set(formula["attributes"]) == {"name"}
    # The import records the columns it read (the file's own) and its still-rejected row in the same shape.
    again_id = int(r.url.path.rsplit("/", 1)[1])
    with container.db.read() as conn:
        record = imports.get(conn, again_id)
    assert record is not None and record["columns"] == ["phone", "name", "consented_at", "consent_source"]
    assert record["notes"] == [contacts_import.REJECTS_NOTE]
    again = list(
        csv.reader(
            io.StringIO(client.get(f"/dashboard/imports/{again_id}/rejects.csv").text.lstrip("\ufeff"))
        )
    )
    assert again[0] == ["line", "reason", "phone", "name", "consented_at", "consent_source"]
    assert again[1][0] == "3" and again[1][2:4] == ["not a phone 1", "Bad 1"]  # its line in this file


def test_a_file_whose_first_columns_are_not_line_and_reason_keeps_them_all(
    container: Container, client: TestClient
) -> None:
    prog = web.program(container)
    csrf = web.csrf(client.get("/dashboard/programs").text)
    r = client.post(
        f"/dashboard/programs/{prog['id']}/import",
        data={"csrf": csrf},
        files={"file": ("list.csv", b"reason,line,phone\nfriend,7,4155550134\n", "text/csv")},
    )
    assert r.status_code == 200 and "Note:" not in r.text
    with container.db.read() as conn:
        contact = contact_repo.get_by_phone(conn, "+14155550134")
    assert contact is not None and contact["attributes"] == {"reason": "friend", "line": "7"}
