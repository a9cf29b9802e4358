"""/v1/campaigns — create, lint, audience dry run, send/schedule, pause, resume, cancel, status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import GivenTime, IdPath, JsonObject, NamePath, NameQuery, Timestamp, text
from optline.services import audience
from optline.services import campaigns as service

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=ERRORS)
# ``_key`` comes first in every route: the key check runs (and commits) before the request's transaction
# opens — on SQLite a second write transaction inside the first would wait for itself.


class CampaignCreate(BaseModel):
    program: Annotated[str, text(100, min_length=1)]
    name: Annotated[str, text(200, min_length=1)]
    template: Annotated[str, text(5000, min_length=1)]
    message_type: Annotated[str, text(20)] = "marketing"
    audience_filter: JsonObject = Field(default_factory=dict)
    tag: Annotated[str, text(100)] | None = None


class CampaignPublic(BaseModel):
    id: int
    program_id: int
    name: str
    template: str
    message_type: str
    tag: str | None
    audience_filter: dict[str, Any]
    status: str
    scheduled_at: Timestamp | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class SendRequest(BaseModel):
    at: GivenTime | None = Field(default=None, description="schedule for this time (default: now)")


def _get(conn: Connection, campaign_id: IdPath) -> dict[str, Any]:
    try:
        return service.get_by_id(conn, campaign_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("", response_model=list[CampaignPublic])
def list_campaigns(_key: ApiKeyDep, conn: ConnDep, program: NameQuery = None) -> list[dict[str, Any]]:
    try:
        return service.list_all(conn, program)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post("", response_model=CampaignPublic, status_code=status.HTTP_201_CREATED)
def create_campaign(
    _key: ApiKeyDep, body: CampaignCreate, conn: ConnDep, container: ContainerDep
) -> dict[str, Any]:
    try:
        return service.create(conn, container.clock, **body.model_dump())
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


@router.get("/{campaign_id}", response_model=CampaignPublic)
def get_campaign(_key: ApiKeyDep, campaign_id: IdPath, conn: ConnDep) -> dict[str, Any]:
    return _get(conn, campaign_id)


@router.post("/{campaign_id}/lint")
def lint_campaign(
    _key: ApiKeyDep, campaign_id: IdPath, conn: ConnDep, container: ContainerDep
) -> dict[str, Any]:
    result = service.lint(
        conn, container.clock, _get(conn, campaign_id), public_url=container.settings.public_url
    )
    seg = result.segments
    return {
        "ok": result.ok,
        "findings": [{"level": f.level, "code": f.code, "message": f.message} for f in result.findings],
        "segments": None if seg is None else {"count": seg.segments, "encoding": seg.encoding, "units": seg.units,
                                              "ucs2_chars": list(seg.ucs2_chars), "gsm7_rewrite": seg.rewrite},
    }  # fmt: skip


@router.get("/{campaign_id}/audience")
def audience_dry_run(_key: ApiKeyDep, campaign_id: IdPath, conn: ConnDep) -> dict[str, Any]:
    campaign = _get(conn, campaign_id)
    try:
        dry = audience.dry_run(conn, campaign["program_id"], campaign["audience_filter"])
    except audience.FilterError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    return {"recipients": dry.recipients, "excluded": dry.excluded}


@router.post("/{campaign_id}/send", response_model=CampaignPublic)
def send_campaign(
    _key: ApiKeyDep,
    campaign_id: IdPath,
    conn: ConnDep,
    container: ContainerDep,
    body: SendRequest | None = None,
) -> dict[str, Any]:
    try:
        row, _ = service.start(
            conn,
            container.clock,
            _get(conn, campaign_id),
            at=body.at if body else None,
            public_url=container.settings.public_url,
        )
    except (
        audience.FilterError
    ) as exc:  # the campaign's filter, not its state: a request to fix, not a conflict
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return row


@router.post("/{campaign_id}/{action}", response_model=CampaignPublic)
def change_campaign(
    _key: ApiKeyDep, campaign_id: IdPath, action: NamePath, conn: ConnDep, container: ContainerDep
) -> dict[str, Any]:
    campaign = _get(conn, campaign_id)
    try:
        if action == "pause":
            return service.pause(conn, campaign)
        if action == "resume":
            return service.resume(conn, campaign)
        if action == "cancel":
            return service.cancel(conn, container.clock, campaign)[0]
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    raise HTTPException(
        status.HTTP_404_NOT_FOUND, f"unknown action {action!r} (pause, resume, cancel, send, lint)"
    )


@router.get("/{campaign_id}/status")
def campaign_status(_key: ApiKeyDep, campaign_id: IdPath, conn: ConnDep) -> dict[str, Any]:
    st = service.status(conn, _get(conn, campaign_id))
    return {
        "status": st.campaign["status"],
        "counts": st.counts,
        "total": st.total,
        "remaining": st.remaining,
    }
