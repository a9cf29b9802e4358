"""Cells of exported CSV files that a spreadsheet would run as a formula are made inert.

OWASP "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): a cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a single quote, so Excel, LibreOffice
and Google Sheets show it as text instead of evaluating it. Phone numbers, names and message bodies in our
exports come from outside (imported files, inbound texts), so every export writes its rows through here.

A leading ``+`` is part of every E.164 number, so ``+14155550134`` becomes ``'+14155550134``: the quote is
what spreadsheets expect (it is not shown in the cell) and our own importers strip it (``unescape_cell``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """The value as it should be written to an exported CSV cell (numbers are left alone)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """Undo ``escape_cell`` when a file we exported is imported again."""
    if value.startswith("'") and value[1:2] and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def escape_row(row: Iterable[Any]) -> list[Any]:
    return [escape_cell(v) for v in row]


class SafeWriter:
    """``csv.writer`` whose every cell goes through ``escape_cell``."""

    def __init__(self, out: Any, **fmt: Any) -> None:
        self._writer = csv.writer(out, **fmt)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(escape_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


if TYPE_CHECKING:
    _DictWriter = csv.DictWriter[str]
else:  # not subscriptable at run time before Python 3.12
    _DictWriter = csv.DictWriter


class SafeDictWriter(_DictWriter):
    """``csv.DictWriter`` whose every cell (and header) goes through ``escape_cell``."""

    def writeheader(self) -> Any:
        return self.writer.writerow(escape_row(self.fieldnames))

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: escape_cell(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for rowdict in rowdicts:
            self.writerow(rowdict)
