"""Campaigns from the dashboard: compose with a live preview, send or schedule, watch, pause, resume, cancel.

Every rule is the campaign service's (services/campaigns.py, audience.py; domain/compose.py, lint.py): this
module parses forms, calls the same functions the CLI and the API call, and renders what they return.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import available_timezones

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel
from starlette.responses import RedirectResponse, Response

from optline.adapters.db import programs as program_repo
from optline.domain.dates import local_zone, parse_when
from optline.entrypoints.web.auth import CurrentUser, container_of, require_csrf
from optline.entrypoints.web.dashboard import page
from optline.entrypoints.web.params import After, RowId
from optline.entrypoints.web.rendering import render
from optline.services import audience, campaign_view
from optline.services import campaigns as service
from optline.services import dashboard as read

router = APIRouter(include_in_schema=False)

REASON_LABELS = {
    "opted_out": "opted out", "not_confirmed": "opt-in not confirmed yet", "no_consent_evidence": "no consent evidence",
    "held": "held for review", "filtered_out": "outside the filters", "invalid_number": "invalid number",
    "not_sms_capable": "number cannot receive SMS", "dnc_without_express_consent": "on a Do-Not-Call list",
}  # fmt: skip
ACTIONS = ("send", "schedule", "pause", "resume", "cancel")
FLASHES = {
    "created": "Campaign saved as a draft.", "send": "Sending: workers are handing the messages over.",
    "schedule": "Scheduled.", "pause": "Paused: no new messages are handed over.", "resume": "Resumed.",
    "cancel": "Cancelled: messages not yet handed over will not go.",
}  # fmt: skip


def _zones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


def _filter_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _when(at: str, tz: str, now: datetime) -> datetime:
    """The schedule field (``datetime-local`` or any ``optline campaigns schedule --at`` form) in ``tz``."""
    return parse_when(at, now, local_zone(tz or "UTC"))


def both_zones(when: datetime | None, tz: str) -> str:
    """ "2026-12-01 10:00 EST (15:00 UTC)": the operator's time with UTC beside it."""
    if when is None:
        return "–"
    utc = when.astimezone(UTC)
    try:
        zone = local_zone(tz or "UTC")
    except ValueError:
        zone = UTC
    local = utc.astimezone(zone)
    if local.utcoffset() == utc.utcoffset():
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    return f"{local:%Y-%m-%d %H:%M %Z} ({utc:%Y-%m-%d %H:%M} UTC)"


def _form_page(
    request: Request,
    user: dict[str, Any],
    form: dict[str, Any],
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    container = container_of(request)
    with container.db.read() as conn:
        programs = read.programs_summary(conn, container.clock.now())
        preview = _preview(request, conn, form) if form.get("program_id") and form.get("template") else None
    return page(
        request,
        user,
        "campaign_new.html",
        "campaigns",
        status_code,
        programs=programs,
        form=form,
        zones=_zones(),
        preview=preview,
        labels=REASON_LABELS,
        error=error,
    )


def _preview(request: Request, conn: Any, form: dict[str, Any]) -> dict[str, Any]:
    container = container_of(request)
    now = container.clock.now()
    when, when_error = None, None
    if form.get("at"):
        try:
            when = _when(form["at"], form.get("tz", ""), now)
        except ValueError as exc:
            when_error = str(exc)
    try:
        filters = audience.parse_filter_items(_filter_lines(form.get("filters", "")))
    except audience.FilterError as exc:
        return {"error": f"Audience filter {exc}"}
    try:
        result = campaign_view.preview(
            conn,
            container.clock,
            program_id=int(form["program_id"]),
            template=form["template"],
            message_type=form.get("message_type", "marketing"),
            audience_filter=filters,
            at=when,
            public_url=container.settings.public_url,
        )
    except (LookupError, ValueError) as exc:
        return {"error": str(exc)}
    return {
        "result": result,
        "when": both_zones(when, form.get("tz", "")) if when else None,
        "when_error": when_error,
    }


class CampaignForm(BaseModel):
    """The compose form's fields, read the same way by the live preview and by save/send/schedule."""

    program_id: str = ""
    name: str = ""
    message_type: str = "marketing"
    template: str = ""
    filters: str = ""  # one filter per line, kept as typed (parsed by audience.parse_filter_items)
    at: str = ""
    tz: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The form as the page re-renders it, surrounding spaces dropped."""
        return {"program_id": self.program_id.strip(), "name": self.name.strip(), "message_type": self.message_type,
                "template": self.template.strip(), "filters": self.filters, "at": self.at.strip(),
                "tz": self.tz.strip()}  # fmt: skip


CampaignFields = Annotated[CampaignForm, Form()]


@router.get("/dashboard/campaigns/new")
def new_campaign(request: Request, user: CurrentUser, program: str = "") -> Response:
    return _form_page(request, user, {"program_id": program, "message_type": "marketing", "tz": ""})


@router.post("/dashboard/campaigns/preview")
def preview_fragment(
    request: Request,
    user: CurrentUser,
    fields: CampaignFields,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """The preview panel alone, for the form's script to swap in as the operator types (a read)."""
    require_csrf(request, csrf)
    form = fields.as_dict()
    container = container_of(request)
    preview = None
    if form["program_id"] and form["template"]:
        with container.db.read() as conn:
            preview = _preview(request, conn, form)
    return render(request, "campaign_preview.html", {"preview": preview, "labels": REASON_LABELS})


@router.post("/dashboard/campaigns/new")
def create_campaign(
    request: Request,
    user: CurrentUser,
    fields: CampaignFields,
    intent: Annotated[str, Form()] = "preview",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """One form, four buttons: preview (without script), save a draft, send now, schedule."""
    require_csrf(request, csrf)
    form = fields.as_dict()
    if intent == "preview":
        return _form_page(request, user, form)
    container = container_of(request)
    if not form["program_id"].isdigit() or not form["name"] or not form["template"]:
        return _form_page(request, user, form, 400, "A campaign needs a program, a name and a message.")
    try:
        audience_filter = audience.parse_filter_items(_filter_lines(form["filters"]))
        if intent == "schedule" and not form["at"]:
            raise ValueError("Choose when to send it, or press Send now.")
        when = _when(form["at"], form["tz"], container.clock.now()) if intent == "schedule" else None
    except ValueError as exc:  # FilterError is a ValueError too
        return _form_page(request, user, form, 400, str(exc))
    try:
        with container.db.transaction() as conn:
            program = program_repo.get(conn, int(form["program_id"]))
            if program is None:
                raise LookupError(f"no program with id {form['program_id']}")
            row = service.create(
                conn,
                container.clock,
                program=program["name"],
                name=form["name"],
                template=form["template"],
                message_type=form["message_type"],
                audience_filter=audience_filter,
            )
            if intent in ("send", "schedule"):
                service.start(conn, container.clock, row, at=when, public_url=container.settings.public_url)
    except (LookupError, ValueError) as exc:  # the whole form stays as typed; nothing was saved
        return _form_page(request, user, form, 400, str(exc))
    flash = intent if intent in ("send", "schedule") else "created"
    return RedirectResponse(
        f"/dashboard/campaigns/{row['id']}?flash={flash}&tz={quote(form['tz'])}", status_code=303
    )


def _campaign_page(
    request: Request,
    user: dict[str, Any],
    campaign_id: int,
    tz: str,
    after: int = 0,
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    container = container_of(request)
    with container.db.transaction() as conn:
        read.refresh(conn, container.clock, window_days=int(container.settings.optout_attribution_days))
    with container.db.read() as conn:
        try:
            progress = campaign_view.progress(conn, campaign_id)
        except LookupError as exc:
            return page(request, user, "campaign.html", "campaigns", 404, progress=None, error=str(exc))
        summary = next(
            (
                c
                for c in read.campaigns_summary(
                    conn, container.clock, window_days=int(container.settings.optout_attribution_days)
                )
                if c["id"] == campaign_id
            ),
            None,
        )
        rows = campaign_view.message_page(conn, campaign_id, after)
        replies = campaign_view.recent_replies(conn, campaign_id)
    flash = FLASHES.get(request.query_params.get("flash", ""))
    return page(
        request,
        user,
        "campaign.html",
        "campaigns",
        status_code,
        progress=progress,
        summary=summary,
        rows=rows,
        after=after,
        next_after=rows[-1]["id"] if len(rows) == campaign_view.PAGE_SIZE else None,
        replies=replies,
        tz=tz,
        both_zones=both_zones,
        zones=_zones(),
        error=error,
        flash_text=flash,
        live=progress.campaign["status"] == "sending",
    )


@router.get("/dashboard/campaigns/{campaign_id}")
def campaign_page(
    request: Request, user: CurrentUser, campaign_id: RowId, tz: str = "", after: After = 0
) -> Response:
    return _campaign_page(request, user, campaign_id, tz, after)


@router.post("/dashboard/campaigns/{campaign_id}")
def change_campaign(
    request: Request,
    user: CurrentUser,
    campaign_id: RowId,
    action: Annotated[str, Form()] = "",
    at: Annotated[str, Form()] = "",
    tz: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    if action not in ACTIONS:
        return _campaign_page(
            request, user, campaign_id, tz, status_code=400, error=f"Unknown action {action!r}."
        )
    try:
        when = None
        if action == "schedule":
            if not at.strip():
                raise ValueError("Choose when to send it.")
            when = _when(at, tz, container.clock.now())
        with container.db.transaction() as conn:
            campaign = service.get_by_id(conn, campaign_id)
            if action in ("send", "schedule"):
                service.start(
                    conn, container.clock, campaign, at=when, public_url=container.settings.public_url
                )
            elif action == "pause":
                service.pause(conn, campaign)
            elif action == "resume":
                service.resume(conn, campaign)
            else:
                service.cancel(conn, container.clock, campaign)
    except LookupError as exc:
        return _campaign_page(request, user, campaign_id, tz, status_code=404, error=str(exc))
    except ValueError as exc:  # CampaignError, FilterError, a time that is not one
        return _campaign_page(request, user, campaign_id, tz, status_code=409, error=str(exc))
    return RedirectResponse(
        f"/dashboard/campaigns/{campaign_id}?flash={action}&tz={quote(tz)}", status_code=303
    )
