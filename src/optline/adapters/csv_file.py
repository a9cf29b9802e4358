"""Reading CSV files as spreadsheet programs write them, and refusing what is not one, naming where.

Encodings (decided in this order; never a guess that could silently turn "José" into "JosÃ©"):
1. a byte-order mark: UTF-8 (Excel's "CSV UTF-8"), UTF-16 LE or BE (Excel's "Unicode Text", Numbers);
2. the encoding the caller names (``--encoding cp1252``; Excel's plain "CSV" on Windows is cp1252);
3. strict UTF-8 (also plain ASCII). A byte that is not UTF-8 stops the read with its line and a hint.

Hostile input is refused with what and where: a NUL character (binary data, or UTF-16 without its mark),
a line longer than ``MAX_LINE_CHARS`` (memory stays bounded whatever the file), a field the csv module
cannot close (an unclosed quote fails at its default 131,072-character field limit, not at EOF). Reading is streamed in blocks; the caller decides what to do with rows already read (the
contacts import stages the whole file before it commits anything).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

MAX_LINE_CHARS = 1 << 20  # a contacts row is a few hundred characters; this is a binary file or no CSV
BLOCK_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")

_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8 (with byte-order mark)"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
ACCEPTED = "UTF-8 (with or without BOM), UTF-16 LE/BE with BOM, or any encoding named with --encoding"


class CsvFileError(ValueError):
    """The file cannot be read as CSV; the message names what and where (line, byte)."""


@dataclass(frozen=True)
class Encoding:
    codec: str  # the Python codec, BOM already skipped
    label: str  # how a person would name it
    bom_bytes: int


def detect_encoding(head: bytes, explicit: str | None = None) -> Encoding:
    """The file's encoding from its first bytes: a BOM decides; otherwise ``explicit``, else UTF-8."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise CsvFileError(f"the file is UTF-32, which is not supported: save it as {ACCEPTED}")
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            return Encoding(codec, label, len(bom))
    if explicit:
        try:
            info = codecs.lookup(explicit)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            info = None
        # Python also names codecs that are not text encodings (hex, base64, zlib, rot13: bytes to bytes,
        # or str to str) and one that refuses everything ("undefined"): none can read a CSV file.
        if info is None or not getattr(info, "_is_text_encoding", True) or info.name == "undefined":
            shown = explicit if len(explicit) <= 40 else explicit[:40] + "…"
            raise CsvFileError(f"unknown encoding {shown!r} (examples: utf-8, cp1252, latin-1)") from None
        name = info.name
        if name.startswith("utf-16") or name.startswith("utf-32"):
            # Without a BOM we would have to guess the byte order; spreadsheets always write one.
            codec = {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(name, name)
            return Encoding(codec, name, 0)
        return Encoding(name, name, 0)
    return Encoding("utf-8", "UTF-8", 0)


def _decode_error(exc: UnicodeDecodeError, enc: Encoding, line: int, tail: str) -> CsvFileError:
    before = exc.object[: exc.start]
    text = before.decode(enc.codec, errors="replace")
    line += text.count("\n")
    column = len((tail + text).rsplit("\n", 1)[-1]) + 1
    bad = exc.object[exc.start : exc.start + 1].hex()
    hint = ""
    if enc.codec == "utf-8":
        hint = (
            "; the file is not UTF-8 — if a spreadsheet saved it as plain CSV on Windows it is probably cp1252:"
            " import it again choosing the encoding cp1252 (on the command line: --encoding cp1252),"
            " or save it as 'CSV UTF-8'"
        )
    return CsvFileError(f"line {line}, character {column}: byte 0x{bad} is not valid {enc.label}{hint}")


def _nul_error(line: int, enc: Encoding) -> CsvFileError:
    return CsvFileError(
        f"line {line}: a NUL character — this is binary data (or UTF-16 without a byte-order mark),"
        f" not a CSV file in {enc.label}"
    )


def lines(raw: IO[bytes], enc: Encoding, on_progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The decoded physical lines (ending with their newline), checked as they stream by."""
    if enc.bom_bytes:
        raw.read(enc.bom_bytes)
        if on_progress:
            on_progress(enc.bom_bytes)
    decoder = codecs.getincrementaldecoder(enc.codec)(errors="strict")
    ascii_compatible = not enc.codec.startswith(("utf-16", "utf-32"))
    line, pending = 1, ""
    while True:
        block = raw.read(BLOCK_BYTES)
        if on_progress and block:
            on_progress(len(block))
        if ascii_compatible and b"\x00" in block:  # before decoding: binary data fails here, not on a byte
            text = block[: block.index(b"\x00")].decode(enc.codec, errors="replace")
            raise _nul_error(line + pending.count("\n") + text.count("\n"), enc)
        failure = None
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            # The lines before the bad byte are still given to the caller (who may keep or drop them).
            failure = _decode_error(exc, enc, line, pending)
            text = exc.object[: exc.start].decode(enc.codec, errors="replace")
        if "\x00" in text:
            raise _nul_error(line + text.count("\n", 0, text.index("\x00")), enc)
        parts = (pending + text).split("\n")
        pending = parts.pop()
        for part in parts:
            yield part + "\n"
            line += 1
        if failure is not None:
            raise failure
        if len(pending) > MAX_LINE_CHARS:
            raise CsvFileError(
                f"line {line}: longer than {MAX_LINE_CHARS:,} characters without a line break — "
                "a contacts file has short rows; is this a CSV file?"
            )
        if not block:
            break
    if pending:
        yield pending


def sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in DELIMITERS}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def records(lines_: Iterator[str], delimiter: str, first_line: int = 1) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) for every non-blank record; csv errors name their line."""
    reader = csv.reader(lines_, delimiter=delimiter)
    line = first_line  # a quoted field may span lines: report where the record starts
    while True:
        start = line
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvFileError(f"line {start}: not valid CSV: {exc}") from None
        line = first_line + reader.line_num
        if row and "".join(row).strip():  # some cell is not blank (one C call, not a generator per row)
            yield start, row
