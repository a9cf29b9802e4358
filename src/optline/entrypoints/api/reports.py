"""/v1/reports: the opt-out report and the list review (the dashboard's charts read the same services)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import NO_NUL, NameQuery
from optline.services import analytics, audit
from optline.services.programs import require_program

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=ERRORS)


def _program(conn: Any, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    try:
        return require_program(conn, name)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/optouts")
def optouts(
    _key: ApiKeyDep,
    conn: ConnDep,
    container: ContainerDep,
    program: NameQuery = None,
    since: date | None = None,
    window_days: int | None = Query(None, ge=1, le=90),
) -> dict[str, Any]:
    """Opt-out rates per campaign (with Wilson CIs and flags), type, tag, program, day, week, channel,
    and the fatigue curve. New opt-outs are rolled up first (incrementally)."""
    window = window_days or container.settings.optout_attribution_days
    prog = _program(conn, program)
    analytics.refresh(conn, container.clock, window_days=window)
    return analytics.report(conn, container.clock, program=prog, since=since, window_days=window).as_dict()


@router.get("/audit/latest")
def latest_audit(
    _key: ApiKeyDep,
    conn: ConnDep,
    trigger: Annotated[str | None, Query(max_length=50, pattern=NO_NUL)] = None,
) -> dict[str, Any]:
    """The newest stored list review, with its findings."""
    run = audit.latest_run(conn, trigger)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no audit has run yet")
    return run.as_dict()


@router.post("/audit", status_code=status.HTTP_201_CREATED)
def run_audit(
    _key: ApiKeyDep, conn: ConnDep, container: ContainerDep, program: NameQuery = None, fix: bool = False
) -> dict[str, Any]:
    """Run the list review now (``fix=true`` applies the safe fixes) and store it."""
    cfg = audit.config_from(container.settings)
    prog = _program(conn, program)
    return audit.run_on(conn, container.clock, cfg, program=prog, fix=fix, trigger="api").as_dict()
