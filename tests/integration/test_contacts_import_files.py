"""Contacts files as spreadsheets write them, and hostile ones, on both engines.

Each encoding is read correctly or refused before anything is stored; a file that is unreadable at its
last line leaves nothing behind; a database failure midway reports exactly which lines were imported;
a mid-size file is accounted for row by row.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from optline.adapters.db import contacts
from optline.adapters.db.tables import consent_events, subscriptions
from optline.adapters.db.tables import contacts as contacts_table
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel, Status
from optline.services import consent
from optline.services import contacts_import as importer
from optline.services.contacts_import import ImportError_, ImportInterrupted, import_file
from optline.services.programs import create_program

HEADER = "phone,first_name,city,consented_at,consent_source\n"
ROWS = (
    "(415) 555-0134,José,Zürich,2024-01-02,web form\n"
    "415.555.0135,Françoise,Besançon,2024-01-03,web form\n"
    "+1 415 555 0136,Ævar,Reykjavík,,\n"
)


@pytest.fixture
def program(container: Container) -> dict:
    with container.db.transaction() as conn:
        return create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )


def count(container: Container, table: Any) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def nothing_stored(container: Container) -> bool:
    return (count(container, contacts_table), count(container, consent_events)) == (0, 0)


def first_name(container: Container, phone: str) -> str:
    with container.db.read() as conn:
        found = contacts.get_by_phone(conn, phone)
    assert found is not None
    return str(found["attributes"]["first_name"])


@pytest.mark.parametrize(
    ("codec", "encoding", "label"),
    [
        ("utf-8", None, "UTF-8"),
        ("utf-8-sig", None, "UTF-8 (with byte-order mark)"),
        ("utf-16", None, "UTF-16 LE"),  # Python writes the BOM, little-endian here
        ("utf-16-be-bom", None, "UTF-16 BE"),
        ("cp1252", "cp1252", "cp1252"),
        ("latin-1", "latin-1", "iso8859-1"),
    ],
)
def test_each_encoding_is_read_correctly(
    container: Container, program: dict, tmp_path: Path, codec: str, encoding: str | None, label: str
) -> None:
    text = (HEADER + ROWS).replace("\n", "\r\n")  # spreadsheets end lines with CRLF
    data = b"\xfe\xff" + text.encode("utf-16-be") if codec == "utf-16-be-bom" else text.encode(codec)
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    s = import_file(container.db, container.clock, path, program, encoding=encoding)
    assert (s.rows, s.created, s.rejected, s.consent_recorded, s.encoding) == (3, 3, 0, 2, label)
    assert first_name(container, "+14155550134") == "José"
    assert first_name(container, "+14155550135") == "Françoise"
    assert first_name(container, "+14155550136") == "Ævar"


def test_cp1252_without_the_encoding_is_refused_naming_the_line(
    container: Container, program: dict, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes((HEADER + ROWS).encode("cp1252"))
    with pytest.raises(ImportError_) as refused:
        import_file(container.db, container.clock, path, program)
    message = str(refused.value)
    assert "line 2, character 19: byte 0xe9 is not valid UTF-8" in message
    assert "cp1252" in message and "nothing was imported" in message
    assert nothing_stored(container)


def test_a_bad_byte_on_the_last_line_leaves_nothing_behind(
    container: Container, program: dict, tmp_path: Path
) -> None:
    # More rows than one staging batch and one merge chunk would hold: the old import had committed
    # thousands of rows before it met the bad byte and crashed with a traceback.
    good = "".join(f"+1 415 {200 + i // 10000} {i % 10000:04d},Ann,,2024-01-01,web\n" for i in range(12_000))
    path = tmp_path / "contacts.csv"
    path.write_bytes(HEADER.encode() + good.encode() + b"+1 415 999 0000,Jos\xe9,,2024-01-01,web\n")
    with pytest.raises(ImportError_, match=r"line 12002, character 20: byte 0xe9 is not valid UTF-8"):
        import_file(container.db, container.clock, path, program)
    assert nothing_stored(container)
    assert not path.with_suffix(".rejects.csv").exists()  # no rejects file for an import that did not happen


def test_a_50_mb_single_line_is_refused_without_reading_it_whole(
    container: Container, program: dict, tmp_path: Path
) -> None:
    path = tmp_path / "one-line.csv"
    with path.open("wb") as f:
        f.write(HEADER.encode())
        block = b"4155550134," * 100_000
        for _ in range(50 * 1024 * 1024 // len(block)):
            f.write(block)
    with pytest.raises(ImportError_, match=r"line 2: longer than 1,048,576 characters without a line break"):
        import_file(container.db, container.clock, path, program)
    assert nothing_stored(container)


def test_binary_data_is_refused(container: Container, program: dict, tmp_path: Path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(random.Random(13).randbytes(200_000))
    with pytest.raises(ImportError_) as refused:
        import_file(container.db, container.clock, path, program)
    assert "not valid UTF-8" in str(refused.value) or "NUL" in str(refused.value)
    # Named as Latin-1 every byte decodes: the NUL characters still give it away.
    with pytest.raises(ImportError_, match=r"line \d+: a NUL character — this is binary data"):
        import_file(container.db, container.clock, path, program, encoding="latin-1")
    assert nothing_stored(container)


def test_nul_bytes_and_utf16_without_bom_are_refused(
    container: Container, program: dict, tmp_path: Path
) -> None:
    nul = tmp_path / "nul.csv"
    nul.write_bytes((HEADER + ROWS).encode() + b"4155550137,Ed\x00,,,\n")
    with pytest.raises(ImportError_, match=r"line 5: a NUL character"):
        import_file(container.db, container.clock, nul, program)
    no_bom = tmp_path / "utf16.csv"
    no_bom.write_bytes((HEADER + ROWS).encode("utf-16-le"))
    with pytest.raises(ImportError_, match=r"line 1: a NUL character .*UTF-16 without a byte-order mark"):
        import_file(container.db, container.clock, no_bom, program)
    assert nothing_stored(container)


def test_unclosed_quote_is_refused_naming_where_the_field_began(
    container: Container, program: dict, tmp_path: Path
) -> None:
    path = tmp_path / "quote.csv"
    path.write_text(HEADER + ROWS + '4155550137,"Ed\n' + "x,y,z\n" * 30_000, encoding="utf-8")
    with pytest.raises(ImportError_, match=r"line 5: not valid CSV: field larger than field limit"):
        import_file(container.db, container.clock, path, program)
    assert nothing_stored(container)


def test_a_database_failure_midway_reports_which_lines_were_imported(
    container: Container, program: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "".join(f"+1 415 201 {i:04d},P{i},,2024-01-01,web\n" for i in range(250))
    path = tmp_path / "contacts.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    monkeypatch.setattr(importer, "MERGE_LINES", 100)
    real = importer._record_consent

    # Chosen by its lines, not by call order: on PostgreSQL two chunks are merged at once.
    def database_goes_away(conn: Any, clock: Any, program: Any, start: int, *args: Any) -> Any:
        if start == 102:  # the second chunk: lines 102–201 (its contacts are written by now)
            raise OperationalError(
                "INSERT INTO consent_events …", {}, Exception("server closed the connection")
            )
        return real(conn, clock, program, start, *args)

    monkeypatch.setattr(importer, "_record_consent", database_goes_away)
    with pytest.raises(ImportInterrupted) as stopped:
        import_file(container.db, container.clock, path, program)
    assert stopped.value.next_line == 102
    assert "lines 2–101 are imported (100 contacts created, 100 consent events)" in str(stopped.value)
    assert "lines from 102 on are not" in str(stopped.value)
    # The third chunk (lines 202–251), merged beside the second on PostgreSQL, was rolled back with it.
    assert (count(container, contacts_table), count(container, consent_events)) == (100, 100)
    monkeypatch.setattr(importer, "_record_consent", real)
    again = import_file(container.db, container.clock, path, program)  # finishing is importing again
    assert (again.created, again.unchanged, again.consent_recorded, again.already_subscribed) == (
        150,
        100,
        150,
        100,
    )
    assert (count(container, contacts_table), count(container, consent_events)) == (250, 250)


def test_mid_size_import_accounts_for_every_row(container: Container, program: dict, tmp_path: Path) -> None:
    rnd = random.Random(5)
    n = 20_000
    existing = [f"+1415{300 + i // 10000}{i % 10000:04d}" for i in range(0, n, 50)]  # 400 already known
    opted_out = existing[:40]
    with container.db.transaction() as conn:
        from optline.domain.phones import parse_phone

        for phone in existing:
            contact, _ = contacts.get_or_create(
                conn, parse_phone(phone), container.clock.now(), attributes={"vip": "y"}
            )
            if phone in opted_out:
                consent.record(
                    conn,
                    container.clock,
                    contact_id=contact["id"],
                    program=program,
                    action=Action.OPT_OUT,
                    channel=Channel.SMS_KEYWORD,
                    evidence={"message_text": "STOP"},
                )
    expected = {"bad": 0, "dup": 0}
    lines = []
    for i in range(n):
        phone = f"(415) {300 + i // 10000}-{i % 10000:04d}"
        r = rnd.random()
        if r < 0.02:
            phone, expected["bad"] = '=HYPERLINK("http://x")', expected["bad"] + 1
        elif r < 0.03 and i > 0:
            phone, expected["dup"] = (
                f"(415) {300 + (i - 1) // 10000}-{(i - 1) % 10000:04d}",
                expected["dup"] + 1,
            )
        consented = "2024-05-01" if i % 4 else ""
        lines.append(f"{phone},Name {i},{consented},{'web' if consented else ''}\n")
    path = tmp_path / "contacts.csv"
    path.write_text("phone,name,consented_at,consent_source\n" + "".join(lines), encoding="utf-8")
    s = import_file(container.db, container.clock, path, program)
    assert s.rows == n
    assert s.rejected == s.reject_reasons["bad phone number"] + s.reject_reasons["duplicate"]
    imported = s.created + s.updated + s.unchanged
    assert s.rows == s.rejected + imported
    assert imported == s.consent_recorded + s.already_subscribed + s.kept_opted_out + s.without_consent
    assert s.reject_reasons["bad phone number"] == expected["bad"]
    # A duplicate's first row may itself have been rejected as a bad number; then it is not a duplicate.
    assert s.reject_reasons["duplicate"] <= expected["dup"]
    assert count(container, contacts_table) == len(existing) + s.created
    assert count(container, consent_events) == len(opted_out) + s.consent_recorded
    assert s.kept_opted_out == sum(s.held_reasons.values()) > 0
    with container.db.read() as conn:
        subscribed = conn.execute(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.status == Status.SUBSCRIBED.value)
        ).scalar_one()
    assert subscribed == s.consent_recorded
    rejects = list(csv.reader(s.rejects_path.open(encoding="utf-8")))  # type: ignore[union-attr]
    assert len(rejects) - 1 == s.rejected + s.kept_opted_out
    formulas = [r for r in rejects[1:] if "HYPERLINK" in r[2]]
    assert formulas and all(r[2].startswith("'=") for r in formulas)  # escaped for spreadsheets
    assert {int(r[0]) for r in rejects[1:]} <= set(range(2, n + 2))


def test_number_list_rejects_escape_formulas_and_unreadable_lists_say_how_far_they_got(
    container: Container, tmp_path: Path
) -> None:
    from optline.services import number_lists

    dnc = tmp_path / "dnc.txt"
    dnc.write_text('+1 415 555 0134\n=HYPERLINK("http://evil")\n@SUM(1)\n', encoding="utf-8")
    s = number_lists.import_dnc(container.db, container.clock, dnc)
    assert (s.added, s.rejected) == (1, 2)
    rejects = list(csv.reader(s.rejects_path.open(encoding="utf-8")))  # type: ignore[union-attr]
    assert [r[2] for r in rejects[1:]] == ['\'=HYPERLINK("http://evil")', "'@SUM(1)"]
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"+1 415 555 0135\n+1 415 555 0136\nJos\xe9\n")
    with pytest.raises(
        number_lists.ListImportError, match=r"line 3, character 4: byte 0xe9 .*\(2 numbers added, 0 rejected"
    ):
        number_lists.import_dnc(container.db, container.clock, broken)


def test_an_import_notifies_opt_in_endpoints(container: Container, program: dict, tmp_path: Path) -> None:
    # The batch payloads of an import were never built: dict() over a result raised TypeError, a traceback.
    from optline.adapters.db.tables import webhook_deliveries
    from optline.services import event_hooks

    box = container.secret_box()  # outside the transaction: it may write the generated key
    with container.db.transaction() as conn:
        event_hooks.create_endpoint(
            conn,
            container.clock,
            box,
            url="https://crm.example/optline",
            events=["opt_in"],
            development=True,
        )
    path = tmp_path / "contacts.csv"
    path.write_text(HEADER + ROWS, encoding="utf-8")
    s = import_file(container.db, container.clock, path, program)
    assert s.consent_recorded == 2
    with container.db.read() as conn:
        bodies = [r.body for r in conn.execute(select(webhook_deliveries.c.body))]
    assert len(bodies) == 2
    assert sum("+14155550134" in b for b in bodies) == sum("+14155550135" in b for b in bodies) == 1
