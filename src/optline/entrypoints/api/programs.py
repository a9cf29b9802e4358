"""/v1/programs"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from optline.domain.compose import optout_link_on
from optline.domain.phones import InvalidPhoneNumber
from optline.domain.support_contact import SupportContactError
from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import NamePath
from optline.entrypoints.api.schemas import ProgramCreate, ProgramPublic, ProgramSettingsUpdate
from optline.services import programs as program_service

router = APIRouter(prefix="/v1/programs", tags=["programs"], responses=ERRORS)


def _public(program: dict[str, object]) -> dict[str, object]:
    settings = program.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    return {**program, "optout_link": optout_link_on(settings), "quiet_hours": settings.get("quiet_hours")}


@router.get("", response_model=list[ProgramPublic])
def list_programs(conn: ConnDep, _key: ApiKeyDep) -> list[dict[str, object]]:
    return [_public(p) for p in program_service.list_programs(conn)]


@router.post("", response_model=ProgramPublic, status_code=status.HTTP_201_CREATED)
def create_program(
    body: ProgramCreate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, object]:
    try:
        return _public(
            program_service.create_program(
                conn,
                container.clock,
                default_region=container.settings.default_region,
                **body.model_dump(mode="json"),
            )
        )
    except (InvalidPhoneNumber, SupportContactError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None  # names the value
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/{name}", response_model=ProgramPublic)
def get_program(name: NamePath, conn: ConnDep, _key: ApiKeyDep) -> dict[str, object]:
    program = program_service.get_program(conn, name)
    if program is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no program named {name!r}")
    return _public(program)


@router.patch("/{name}", response_model=ProgramPublic)
def change_settings(
    name: NamePath, body: ProgramSettingsUpdate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, object]:
    program = program_service.get_program(conn, name)
    if program is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no program named {name!r}")
    changes: dict[str, object] = body.model_dump(exclude_unset=True, exclude={"quiet_hours"})
    if body.quiet_hours is not None:
        changes.update(quiet_start=body.quiet_hours.start, quiet_end=body.quiet_hours.end)
    try:
        return _public(
            program_service.change_settings(
                conn, program, default_region=container.settings.default_region, **changes
            )
        )
    except ValueError as exc:  # QuietHoursError names the time and the rule
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
