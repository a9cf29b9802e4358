"""The operator dashboard: overview, programs, campaigns, contacts, review queue, list review, simulator."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import RedirectResponse, Response

from optline.adapters.db import programs as program_repo
from optline.bootstrap import Container
from optline.domain.consent import ConsentRefused
from optline.domain.phones import InvalidPhoneNumber
from optline.domain.stats import CRITICAL_OPTOUT_RATE
from optline.domain.support_contact import SupportContactError
from optline.entrypoints.web import charts
from optline.entrypoints.web.auth import CurrentUser, container_of, require_csrf
from optline.entrypoints.web.params import After, RowId
from optline.entrypoints.web.rendering import render
from optline.entrypoints.web.security import session_csrf_token
from optline.services import audit, imports, review
from optline.services import dashboard as read
from optline.services import programs as program_service
from optline.services.contacts_import import ImportError_, ImportInterrupted

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

NAV = [
    ("overview", "/dashboard", "Overview"),
    ("programs", "/dashboard/programs", "Programs"),
    ("campaigns", "/dashboard/campaigns", "Campaigns"),
    ("contacts", "/dashboard/contacts", "Contacts"),
    ("imports", "/dashboard/imports", "Imports"),
    ("review", "/dashboard/review", "Review queue"),
    ("list-review", "/dashboard/list-review", "List review"),
    ("webhooks", "/dashboard/webhooks", "Webhooks"),
    ("api-keys", "/dashboard/api-keys", "API keys"),
    ("users", "/dashboard/users", "Users"),
    ("simulator", "/dashboard/simulator", "Simulator"),
]

FLASHES = {
    "password": "Your password is changed.",
    "demo": "Demo data loaded: explore every page.",
    "program": "Program created.",
    "decided": "Decision recorded in the consent ledger.",
    "replied": "Reply sent through the simulator.",
    "audit": "List review finished.",
}


def _page(
    request: Request, user: dict[str, Any], name: str, active: str, status_code: int = 200, **ctx: Any
) -> Response:
    with container_of(request).db.read() as conn:
        pending = read.pending_review_count(conn)
    flash = ctx.pop("flash_text", None) or FLASHES.get(request.query_params.get("flash", ""))
    simulator = container_of(request).settings.uses_simulator  # no menu entry to a page that is not mounted
    nav = [item for item in NAV if item[0] != "simulator" or simulator]
    context = {
        "user": user, "nav": nav, "active": active, "csrf": session_csrf_token(request), "pending": pending,
        "flash": flash, **ctx,
    }  # fmt: skip
    return render(request, name, context, status_code)


page = _page  # the other dashboard modules' name for it


def _window(container: Container) -> int:
    return int(container.settings.optout_attribution_days)


def _refresh(container: Container) -> None:
    with container.db.transaction() as conn:
        read.refresh(conn, container.clock, window_days=_window(container))


@router.get("/")
def root() -> Response:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/dashboard")
def overview(request: Request, user: CurrentUser) -> Response:
    container = container_of(request)
    now = container.clock.now()
    with container.db.read() as conn:
        if read.is_empty(conn):
            return _page(request, user, "welcome.html", "overview")
    _refresh(container)
    with container.db.read() as conn:
        stats = read.overview(conn, now)
        camps = read.campaigns_summary(conn, container.clock, window_days=_window(container))[:5]
    return _page(
        request,
        user,
        "overview.html",
        "overview",
        stats=stats,
        chart=charts.trend_chart(stats["trend"]),
        chart_compact=charts.trend_chart(stats["trend"], compact=True),
        channels=charts.channel_bars(stats["channels"]),
        campaigns=camps,
        delivery_bar=charts.delivery_bar,
    )


@router.post("/dashboard/demo")
def load_demo(request: Request, user: CurrentUser, csrf: Annotated[str, Form()] = "") -> Response:
    require_csrf(request, csrf)
    from optline.services import demo

    try:
        demo.load(container_of(request))
    except (demo.DemoAlreadyLoaded, demo.DemoRefused):  # offered on an empty database only: a double click
        return RedirectResponse("/dashboard", status_code=303)
    return RedirectResponse("/dashboard?flash=demo", status_code=303)


@router.get("/dashboard/programs")
def programs_page(request: Request, user: CurrentUser) -> Response:
    container = container_of(request)
    with container.db.read() as conn:
        rows = read.programs_summary(conn, container.clock.now())
    return _page(request, user, "programs.html", "programs", programs=rows, form={})


@router.post("/dashboard/programs")
def create_program(
    request: Request,
    user: CurrentUser,
    name: Annotated[str, Form()] = "",
    brand: Annotated[str, Form()] = "",
    sender: Annotated[str, Form()] = "",
    help_contact: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "brand",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    form = {"name": name.strip(), "brand": brand.strip(), "sender": sender.strip(), "scope": scope,
            "help_contact": help_contact.strip()}  # fmt: skip
    error = None
    if not form["name"] or not form["brand"]:
        error = "A program needs a name and a brand."
    elif scope not in ("brand", "program"):
        error = "Choose what an opt-out stops: the whole brand or this program."
    if not error:
        try:  # the service normalises and validates the sender (one rule for CLI, API and dashboard)
            with container.db.transaction() as conn:
                program_service.create_program(
                    conn,
                    container.clock,
                    default_region=container.settings.default_region,
                    name=form["name"],
                    brand=form["brand"],
                    sender_numbers=[form["sender"]] if form["sender"] else [],
                    optout_scope=scope,
                    help_contact=form["help_contact"],
                )
        except SupportContactError as exc:
            error = f"Support contact: {exc}"
        except InvalidPhoneNumber as exc:
            error = f"Sender number: {exc}"
        except ValueError as exc:
            error = str(exc)
    if error:
        with container.db.read() as conn:
            rows = read.programs_summary(conn, container.clock.now())
        return _page(request, user, "programs.html", "programs", 400, programs=rows, form=form, error=error)
    return RedirectResponse("/dashboard/programs?flash=program", status_code=303)


MAX_UPLOAD_BYTES = 200 * 1024 * 1024


@router.post("/dashboard/programs/{program_id}/import")
def import_contacts(
    request: Request,
    user: CurrentUser,
    program_id: RowId,
    file: Annotated[UploadFile, File()],
    csrf: Annotated[str, Form()] = "",
    encoding: Annotated[str, Form()] = "",
) -> Response:
    """The CSV import the CLI does, from the browser: same rules, every rejected row explained.

    Never a 500: a file that cannot be imported, or a database that fails midway, is a page that says what
    happened to which lines (the import itself guarantees nothing is half-stored without being reported).
    """
    require_csrf(request, csrf)
    container = container_of(request)
    with container.db.read() as conn:
        rows = read.programs_summary(conn, container.clock.now())
        program = program_repo.get(conn, program_id)
    if program is None:
        return _page(
            request,
            user,
            "programs.html",
            "programs",
            404,
            programs=rows,
            form={},
            error=f"No program with id {program_id}.",
        )
    with tempfile.TemporaryDirectory(prefix="optline-import-") as tmp:
        path = Path(tmp) / "contacts.csv"
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    return _page(
                        request,
                        user,
                        "programs.html",
                        "programs",
                        413,
                        programs=rows,
                        form={},
                        error="That file is over 200 MB; import it with `optline contacts import`.",
                    )
                out.write(chunk)
        name = file.filename or "upload.csv"
        try:
            import_id = imports.start(
                container.db,
                container.clock,
                program,
                file_name=name,
                source="dashboard",
                imported_by=str(user["username"]),
            )
            imports.run(
                container.db,
                container.clock,
                import_id,
                path,
                program,
                default_region=container.settings.default_region,
                rejects_path=Path(tmp) / "rejects.csv",
                encoding=encoding or None,
            )
        except ImportInterrupted as exc:
            return _page(
                request,
                user,
                "programs.html",
                "programs",
                503,
                programs=rows,
                form={},
                error=f"{name}: {exc}",
                imported=exc.summary,
                imported_into=program["name"],
                imported_file=name,
                import_id=import_id,
            )
        except ImportError_ as exc:
            return _page(
                request,
                user,
                "programs.html",
                "programs",
                400,
                programs=rows,
                form={},
                error=f"{name}: {exc}",
            )
        except SQLAlchemyError as exc:  # before the merge began: only the temporary staging table was written
            log.exception("contacts import of %s failed", name)
            return _page(
                request,
                user,
                "programs.html",
                "programs",
                503,
                programs=rows,
                form={},
                error=f"{name}: the database failed while reading the file "
                f"({type(getattr(exc, 'orig', None) or exc).__name__}); nothing was imported — try again.",
            )
    # Post/redirect/get: the results page is the import's own (reloading it never imports the file again).
    return RedirectResponse(f"/dashboard/imports/{import_id}", status_code=303)


@router.get("/dashboard/campaigns")
def campaigns_page(request: Request, user: CurrentUser) -> Response:
    container = container_of(request)
    _refresh(container)
    with container.db.read() as conn:
        rows = read.campaigns_summary(conn, container.clock, window_days=_window(container))
    critical = CRITICAL_OPTOUT_RATE
    return _page(
        request,
        user,
        "campaigns.html",
        "campaigns",
        campaigns=rows,
        chart=charts.campaign_rates_chart(rows, critical),
        chart_compact=charts.campaign_rates_chart(rows, critical, compact=True),
        delivery_bar=charts.delivery_bar,
    )


@router.get("/dashboard/contacts")
def contacts_page(
    request: Request,
    user: CurrentUser,
    phone: str = "",
    q: str = "",
    program: str = "",
    status: str = "",
    after: After = 0,
) -> Response:
    """Search (services/contact_search.py) and, for one phone number, the person's page with every consent
    event and every message in and out."""
    from optline.services import contact_search
    from optline.services import contacts as contact_service

    container = container_of(request)
    region = container.settings.default_region
    text = (phone or q).strip()
    ctx: dict[str, Any] = {"phone": text, "q": text, "contact": None, "error": None, "program": program,
                           "status": status, "statuses": contact_search.STATUSES, "results": None}  # fmt: skip
    with container.db.read() as conn:
        ctx["programs"] = program_repo.list_all(conn)
        found = None
        if phone.strip():  # ?phone= (links to a person): that number or a clear error, never a search
            try:
                found = contact_service.show_contact(conn, phone, region)
            except InvalidPhoneNumber as exc:
                ctx["error"] = f"That doesn't look like a phone number: {exc}"
            if found is None and not ctx["error"]:
                ctx["error"] = f"No contact with the number {phone}."
        elif text and contact_search.looks_like_phone(text):
            try:
                found = contact_service.show_contact(conn, text, region)
            except InvalidPhoneNumber:
                found = None  # digits that are not a whole number: searched below as part of numbers
        if found is not None:
            ctx["contact"] = found
            ctx["contact_name"] = contact_search.display_name(found.get("attributes") or {})
            ctx["timeline"] = read.contact_timeline(conn, found["id"])
        elif not phone.strip() and (text or program or status):
            query = contact_search.Query(text, int(program) if program.isdigit() else None, status)
            try:
                ctx["results"], ctx["next_after"] = contact_search.search(conn, query, region, after=after)
            except contact_search.SearchError as exc:
                ctx["error"] = str(exc)
        ctx["examples"] = read.recent_contacts(conn)
    return _page(request, user, "contacts.html", "contacts", **ctx)


@router.get("/dashboard/contacts/proof")
def contact_proof(request: Request, user: CurrentUser, phone: str, format: str = "pdf") -> Response:
    """The consent evidence bundle as a download (services.proof; the same bundle as ``optline proof``)."""
    from optline.entrypoints import proof_formats
    from optline.services import checkpoints
    from optline.services import proof as proof_service

    if format not in proof_formats.FORMATS:
        return Response(f"Unknown format {format!r}: use one of {', '.join(proof_formats.FORMATS)}.", 400)
    container = container_of(request)
    try:
        with container.db.read() as conn:
            found, problems, source = checkpoints.for_proof(container, conn)
            bundle = proof_service.build(
                conn,
                phone,
                container.settings.default_region,
                now=container.clock.now(),
                checkpoints=found,
                checkpoint_problems=problems,
                checkpoint_source=source,
            )
    except (InvalidPhoneNumber, proof_service.UnknownContact) as exc:
        return Response(f"{exc}", 404, media_type="text/plain")
    data = proof_formats.render(bundle, format)
    suffix = {"text": "txt"}.get(format, format)
    name = f"consent-evidence-{bundle['contact']['phone'].lstrip('+')}.{suffix}"
    return Response(
        data,
        media_type=proof_formats.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/dashboard/review")
def review_page(request: Request, user: CurrentUser) -> Response:
    with container_of(request).db.read() as conn:
        items = read.review_queue(conn)
    return _page(request, user, "review.html", "review", items=items)


@router.post("/dashboard/review/{inbound_id}")
def decide(
    request: Request,
    user: CurrentUser,
    inbound_id: RowId,
    decision: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    try:
        choice = review.Decision(decision)
        with container.db.transaction() as conn:
            review.decide(conn, container.clock, inbound_id, choice, operator=str(user["username"]))
    except (ValueError, LookupError, ConsentRefused) as exc:
        with container.db.read() as conn:
            items = read.review_queue(conn)
        return _page(request, user, "review.html", "review", 409, items=items, error=str(exc))
    return RedirectResponse("/dashboard/review?flash=decided", status_code=303)


REASON_LABELS = {
    "no_consent_evidence": "No consent evidence", "stale_consent": "Consent gone stale",
    "suppressed_in_queue": "Opted out but still queued", "invalid_number": "Invalid number",
    "not_mobile": "Not a mobile number", "duplicate_number": "Same number twice",
    "dnc_without_express_consent": "On a Do-Not-Call list", "reassigned_after_consent": "Number reassigned",
    "review_overdue": "Review waiting over a day",
}  # fmt: skip


@router.get("/dashboard/list-review")
def list_review_page(request: Request, user: CurrentUser) -> Response:
    return _list_review(request, user)


def _list_review(
    request: Request, user: dict[str, Any], status_code: int = 200, error: str | None = None
) -> Response:
    with container_of(request).db.read() as conn:
        run = audit.latest_run(conn)
        # A review is as of when it finished (its own fixes are events recorded before that).
        stale = run is not None and read.changed_since(conn, run.finished_at or run.started_at)
    summary = sorted(run.summary.items(), key=lambda kv: -kv[1]) if run else []
    return _page(
        request,
        user,
        "list_review.html",
        "list-review",
        status_code,
        review=run,
        summary=summary,
        labels=REASON_LABELS,
        stale=stale,
        error=error,
        chart=charts.channel_bars([(REASON_LABELS.get(k, k), n) for k, n in summary], unit_labels=False),
    )


@router.post("/dashboard/list-review")
def run_list_review(
    request: Request,
    user: CurrentUser,
    csrf: Annotated[str, Form()] = "",
    fix: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Run the list review now; with ``fix`` (and the operator's confirmation) apply the safe fixes, the same
    ones ``optline audit --fix`` applies."""
    require_csrf(request, csrf)
    if fix and confirm != "yes":
        return _list_review(request, user, 400, "Tick the confirmation to apply the fixes.")
    container = container_of(request)
    audit.run(
        container.db,
        container.clock,
        audit.config_from(container.settings),
        trigger="dashboard",
        fix=bool(fix),
    )
    return RedirectResponse("/dashboard/list-review?flash=audit", status_code=303)
