"""/v1/programs"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import Connection

from optline.adapters.db import signups as signups_repo
from optline.domain.compose import optout_link_on
from optline.domain.phones import InvalidPhoneNumber
from optline.domain.support_contact import SupportContactError
from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import NamePath
from optline.entrypoints.api.schemas import ProgramCreate, ProgramPublic, ProgramSettingsUpdate
from optline.services import programs as program_service
from optline.services import signup as signup_service

router = APIRouter(prefix="/v1/programs", tags=["programs"], responses=ERRORS)


def _public(conn: Connection, program: dict[str, Any]) -> dict[str, Any]:
    settings = program.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    latest = signups_repo.latest_disclosure(conn, program["id"])
    shown = signup_service.disclosure_shown(conn, program)
    return {
        **program,
        "optout_link": optout_link_on(settings),
        "quiet_hours": settings.get("quiet_hours"),
        "disclosure": shown,
        "disclosure_version": latest["version"] if latest is not None and latest["text"] == shown else None,
    }


@router.get("", response_model=list[ProgramPublic])
def list_programs(conn: ConnDep, _key: ApiKeyDep) -> list[dict[str, object]]:
    return [_public(conn, p) for p in program_service.list_programs(conn)]


@router.post("", response_model=ProgramPublic, status_code=status.HTTP_201_CREATED)
def create_program(
    body: ProgramCreate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, object]:
    try:
        return _public(
            conn,
            program_service.create_program(
                conn,
                container.clock,
                default_region=container.settings.default_region,
                **body.model_dump(mode="json"),
            ),
        )
    except (InvalidPhoneNumber, SupportContactError, program_service.ProgramNameError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None  # names the value
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/{name}", response_model=ProgramPublic)
def get_program(name: NamePath, conn: ConnDep, _key: ApiKeyDep) -> dict[str, object]:
    program = program_service.get_program(conn, name)
    if program is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no program named {name!r}")
    return _public(conn, program)


@router.patch("/{name}", response_model=ProgramPublic)
def change_settings(
    name: NamePath, body: ProgramSettingsUpdate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, object]:
    program = program_service.get_program(conn, name)
    if program is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no program named {name!r}")
    given = body.model_fields_set
    changes: dict[str, object] = body.model_dump(include=given - {"quiet_hours", "disclosure"})
    if "quiet_hours" in given:  # null: no window of the program's own (the law's)
        window = body.quiet_hours
        changes.update(quiet_start=window.start if window else "", quiet_end=window.end if window else "")
    # What a sign-up showed before this change: the disclosure changes only if its text does (as the page).
    shown = signup_service.disclosure_shown(conn, program)
    try:
        if changes:
            program = program_service.change_settings(
                conn, program, default_region=container.settings.default_region, **changes
            )
        if "disclosure" in given:
            signup_service.change_disclosure(conn, container.clock, program, body.disclosure, shown=shown)
    except ValueError as exc:  # QuietHoursError names the time and the rule; SignupError what text lacks
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return _public(conn, program)
