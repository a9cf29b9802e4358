"""CSV downloads from the dashboard: streamed a batch at a time (services/exports.py), formulas escaped."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from optline.domain.csv_safety import escape_cell
from optline.entrypoints.web.auth import CurrentUser, container_of
from optline.services import contact_search, exports

router = APIRouter(include_in_schema=False)
FLUSH_ROWS = 500  # rows per chunk sent to the browser


def csv_chunks(rows: Iterable[list[str]]) -> Iterator[bytes]:
    """CSV text in chunks; every cell passes ``escape_cell`` (a spreadsheet never runs a cell as a formula).

    Starts with a UTF-8 byte-order mark so that Excel reads accents and emoji as UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    yield "\ufeff".encode()
    for n, row in enumerate(rows, 1):
        writer.writerow([escape_cell(cell) for cell in row])
        if n % FLUSH_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@router.get("/dashboard/export/{name}.csv")
def export_csv(
    request: Request, user: CurrentUser, name: str, q: str = "", program: str = "", status: str = ""
) -> Response:
    container = container_of(request)
    settings = container.settings
    if name == "contacts":
        query = contact_search.Query(q, int(program) if program.isdigit() else None, status)
        if status and status not in contact_search.STATUSES:
            return Response(
                f"unknown status {status!r}; use one of {', '.join(contact_search.STATUSES)}", 400
            )
        rows = exports.contacts_rows(container.db, query, settings.default_region)
    elif name == "optouts":
        rows = exports.optouts_rows(container.db)
    elif name == "report":
        rows = exports.report_rows(container.db, container.clock, int(settings.optout_attribution_days))
    elif name == "findings":
        rows = exports.findings_rows(container.db)
    else:
        return Response(f"no export {name!r}: contacts, optouts, report or findings", 404)
    day = container.clock.now().strftime("%Y-%m-%d")
    return StreamingResponse(
        csv_chunks(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="optline-{name}-{day}.csv"'},
    )
