"""CSV writing for the exports: formula cells escaped (OWASP CSV injection), rows streamed lazily."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from optline.domain.csv_safety import escape_cell
from optline.entrypoints.web.exports import FLUSH_ROWS, csv_chunks


def test_cells_that_start_a_formula_are_quoted() -> None:
    for cell in ("=1+1", "+1 415", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert escape_cell(cell) == "'" + cell
    for cell in ("Ana", "", "1+1", "a=b", "'already"):
        assert escape_cell(cell) == cell


def test_rows_are_streamed_a_chunk_at_a_time() -> None:
    produced = 0

    def rows() -> Iterator[list[str]]:
        nonlocal produced
        for i in range(FLUSH_ROWS * 3 + 7):
            produced += 1
            yield [str(i), "=cmd|' /C calc'!A0", 'naïve, "quoted"']

    chunks = csv_chunks(rows())
    assert next(chunks) == "\ufeff".encode()
    next(chunks)
    assert produced == FLUSH_ROWS  # only one chunk's rows were read so far: constant memory
    body = b"".join(chunks)
    assert produced == FLUSH_ROWS * 3 + 7
    parsed = list(csv.reader(io.StringIO(body.decode())))
    assert parsed[-1] == [str(FLUSH_ROWS * 3 + 6), "'=cmd|' /C calc'!A0", 'naïve, "quoted"']
