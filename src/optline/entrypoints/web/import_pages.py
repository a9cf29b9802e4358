"""The contacts imports: the recent ones, each one's results (counts, every rejected row with its line and
reason, paginated) and its rejects CSV, the file the CLI writes beside the input, to fix and import again.

The records are ``services/imports.py``'s; the upload itself is on the Programs page (``dashboard.py``)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from optline.entrypoints.web.auth import CurrentUser, container_of
from optline.entrypoints.web.dashboard import page
from optline.entrypoints.web.exports import csv_chunks
from optline.entrypoints.web.params import AfterLine, Before, RowId
from optline.services import contacts_import, imports

router = APIRouter(include_in_schema=False)

# The columns the importer reads, from the importer's own definitions (the page explains each group).
COLUMNS = {
    "phone": contacts_import.PHONE_COLUMNS,
    "consent": tuple(sorted(contacts_import.CONSENT_COLUMNS)),
    "contact": tuple(sorted(contacts_import.CONTACT_COLUMNS)),
}


@router.get("/dashboard/imports")
def imports_page(request: Request, user: CurrentUser, before: Before = None) -> Response:
    with container_of(request).db.read() as conn:
        rows, older = imports.recent(conn, before=before)
    return page(request, user, "imports.html", "imports", imports=rows, older=older, columns=COLUMNS)


@router.get("/dashboard/imports/{import_id}")
def import_page(request: Request, user: CurrentUser, import_id: RowId, after: AfterLine = 0) -> Response:
    with container_of(request).db.read() as conn:
        record = imports.get(conn, import_id)
        if record is None:
            return page(
                request,
                user,
                "imports.html",
                "imports",
                404,
                imports=[],
                older=None,
                columns=COLUMNS,
                error=f"No import with id {import_id}.",
            )
        rejects, next_after = imports.rejects_page(conn, import_id, after=after)
    return page(
        request,
        user,
        "import.html",
        "imports",
        record=record,
        rejects=rejects,
        next_after=next_after,
        after=after,
        outcomes=imports.OUTCOMES,
        columns=COLUMNS,
        held_prefix=contacts_import.HELD + ": ",
    )


@router.get("/dashboard/imports/{import_id}/rejects.csv")
def rejects_csv(request: Request, user: CurrentUser, import_id: RowId) -> Response:
    container = container_of(request)
    with container.db.read() as conn:
        record = imports.get(conn, import_id)
    if record is None:
        return Response(f"no import with id {import_id}", 404, media_type="text/plain")
    # The uploaded name is the person's: only safe characters go into the header.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", record["file_name"].rsplit(".", 1)[0])[:100] or "import"
    return StreamingResponse(
        csv_chunks(imports.rejects_rows(container.db, record)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stem}.rejects.csv"'},
    )
