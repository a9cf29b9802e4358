"""Reading CSV files (encodings, hostile input) and writing them (formula cells escaped in every export)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from optline.adapters import csv_file
from optline.adapters.csv_file import CsvFileError
from optline.domain.csv_safety import SafeDictWriter, SafeWriter, escape_cell, unescape_cell
from optline.entrypoints.cli import audit as audit_cli
from optline.entrypoints.cli import report as report_cli
from optline.services import analytics
from optline.services.audit import Finding, Reason

# OWASP CSV Injection: cells starting with these run as formulas in Excel, LibreOffice and Google Sheets.
HOSTILE = ['=HYPERLINK("http://evil","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("cell", HOSTILE)
def test_formula_cells_are_escaped_and_unescaped(cell: str) -> None:
    assert escape_cell(cell) == "'" + cell
    assert unescape_cell(escape_cell(cell)) == cell


@pytest.mark.parametrize("value", ["Ann", "", "'quoted", 42, 1.5, None, "a=b"])
def test_other_cells_are_untouched(value: object) -> None:
    assert escape_cell(value) == value


def test_writers_escape_every_cell() -> None:
    out = io.StringIO()
    SafeWriter(out).writerows([HOSTILE])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'" + c for c in HOSTILE]
    out = io.StringIO()
    writer = SafeDictWriter(out, ["a", "=b"])
    writer.writeheader()
    writer.writerows([{"a": "=1", "=b": 2}])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["a", "'=b"], ["'=1", "2"]]


def test_report_csv_escapes_names_and_tags() -> None:
    row = analytics.RateRow(key='=HYPERLINK("http://evil")', sent=10, delivered=9, optouts=1)
    campaign = analytics.CampaignRow(key="@launch", campaign_id=1, program="-deals", tag="+vip", sent=5)
    rep = analytics.Report(
        generated_at=datetime(2026, 11, 26, tzinfo=UTC),
        program=None,
        since=date(2026, 1, 1),
        window_days=30,
        totals=analytics.RateRow(key="all"),
        attributed=0,
        unattributed=0,
        campaigns=[campaign],
        by_type=[],
        by_tag=[row],
        by_program=[],
        by_day=[],
        by_week=[],
        by_channel=[],
        by_frequency=[],
    )
    out = io.StringIO()
    report_cli.write_csv(rep, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[1]["key"] == "'@launch" and rows[1]["program"] == "'-deals" and rows[1]["tag"] == "'+vip"
    assert rows[2]["key"] == '\'=HYPERLINK("http://evil")' and rows[2]["sent"] == "10"


def test_audit_csv_escapes_phones_and_details() -> None:
    finding = Finding(
        reason=Reason.INVALID_NUMBER,
        contact_id=7,
        phone="+14155550134",
        program_id=None,
        detail="=cmd|' /C calc'!A0",
        action="@remove",
    )
    out = io.StringIO()
    audit_cli.write_csv([finding], out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    # A leading + is escaped too: it also keeps spreadsheets from turning the number into 14155550134.
    assert (row["phone"], row["detail"], row["action"]) == (
        "'+14155550134",
        "'=cmd|' /C calc'!A0",
        "'@remove",
    )


def read(data: bytes, encoding: str | None = None) -> list[str]:
    enc = csv_file.detect_encoding(data[:4], encoding)
    return list(csv_file.lines(io.BytesIO(data), enc))


@pytest.mark.parametrize(
    ("data", "label"),
    [
        ("a,é\r\n".encode(), "UTF-8"),
        ("a,é\r\n".encode("utf-8-sig"), "UTF-8 (with byte-order mark)"),
        ("a,é\r\n".encode("utf-16"), "UTF-16 LE"),
        (b"\xfe\xff" + "a,é\r\n".encode("utf-16-be"), "UTF-16 BE"),
    ],
)
def test_a_bom_decides_else_utf8(data: bytes, label: str) -> None:
    assert csv_file.detect_encoding(data[:4]).label == label
    assert read(data) == ["a,é\r\n"]


def test_the_named_encoding_reads_a_file_without_bom_and_a_bom_still_wins() -> None:
    assert read("a,é\n".encode("cp1252"), "cp1252") == ["a,é\n"]
    assert read("a,é\n".encode("utf-8-sig"), "cp1252") == ["a,é\n"]
    with pytest.raises(CsvFileError, match="unknown encoding 'nope'"):
        read(b"a\n", "nope")
    with pytest.raises(CsvFileError, match="UTF-32"):
        read("a\n".encode("utf-32"))


def test_a_bad_byte_is_named_by_line_and_character_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_file, "BLOCK_BYTES", 7)  # lines and characters straddle the blocks
    with pytest.raises(CsvFileError, match=r"line 3, character 6: byte 0xe9 is not valid UTF-8"):
        read("ab,cd\nef,gh\nij,kl\xe9\n".encode("latin-1"))


def test_a_multibyte_character_split_across_blocks_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_file, "BLOCK_BYTES", 3)
    assert read("é€😀\n".encode()) == ["é€😀\n"]


def test_a_long_line_is_refused_before_it_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_file, "MAX_LINE_CHARS", 100)
    monkeypatch.setattr(csv_file, "BLOCK_BYTES", 64)
    data = io.BytesIO(b"phone\n" + b"1" * 10_000)
    lines = csv_file.lines(data, csv_file.detect_encoding(b""))
    assert next(lines) == "phone\n"
    with pytest.raises(CsvFileError, match="line 2: longer than 100 characters"):
        next(lines)
    assert data.tell() <= 6 + 3 * 64  # it stopped reading


def test_records_report_where_a_quoted_record_starts() -> None:
    lines = iter(['a,"b\n', 'c",d\n', "\n", "e,f\n"])
    assert list(csv_file.records(lines, ",", first_line=2)) == [(2, ["a", "b\nc", "d"]), (5, ["e", "f"])]
