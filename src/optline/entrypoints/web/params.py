"""The numbers a dashboard address carries (row ids in the path, paging cursors in the query), bounded as
the database can store them: a typed or edited URL with an id past 64 bits would otherwise reach the
database and fail there (SQLite's OverflowError, PostgreSQL's "out of range": a 500) instead of being
refused with a 422 that names the parameter (``web/__init__.py`` words it for a person)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from optline.adapters.db.tables import MAX_ID

RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
# "after" cursors start at 0 (from the first row); "before" has no default (from the newest).
After = Annotated[int, Query(ge=0, le=MAX_ID)]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID)]
# A line of an imported file (import_rejects.line is a 32-bit INTEGER: PostgreSQL refuses a larger value).
AfterLine = Annotated[int, Query(ge=0, le=2**31 - 1)]
