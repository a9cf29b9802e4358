"""CSV cells that a spreadsheet will not run as a formula (OWASP "CSV Injection").

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by Excel, LibreOffice
and Google Sheets as a formula (``=HYPERLINK(…)``, ``@SUM(…)``); a quote in front makes it text. Phone
numbers in E.164 start with ``+``: they are escaped too (the sheet shows them as text, which is what they
are). https://owasp.org/www-community/attacks/CSV_Injection
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value
