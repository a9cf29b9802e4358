"""/v1/programs/{name}/signups: start a double opt-in for a number, list sign-ups."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from optline.adapters.db import signups as signup_repo
from optline.domain.consent import Channel, ConsentRefused, OptedOut
from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import GivenTime, JsonObject, NamePath, Timestamp, text
from optline.services import signup as signup_service
from optline.services.programs import require_program

router = APIRouter(prefix="/v1/programs/{name}/signups", tags=["signups"], responses=ERRORS)


class SignupCreate(BaseModel):
    phone: Annotated[str, text(40, min_length=1)] = Field(
        description="the number that asked to join, in any common format"
    )
    source: Annotated[str, text(200, min_length=1)] = Field(
        description="where consent was given (e.g. 'checkout page', 'kiosk 4')"
    )
    disclosure_text: Annotated[str, text(2000, min_length=1)] = Field(
        description="the exact disclosure the person saw and agreed to"
    )
    occurred_at: GivenTime = Field(description="when the person gave consent (ISO 8601 with time zone)")
    evidence: JsonObject = Field(default_factory=dict, description="anything else worth keeping")


class SignupPublic(BaseModel):
    id: int
    phone: str
    program: str
    channel: str
    status: Literal["pending", "confirmed", "expired", "cancelled"]
    disclosure_version_id: int
    started_at: Timestamp
    expires_at: Timestamp
    confirmed_at: Timestamp | None = None
    expired_at: Timestamp | None = None
    prompt_message_id: int | None = None


class SignupStarted(BaseModel):
    outcome: Literal["pending", "already_pending", "already_subscribed"]
    signup: SignupPublic | None


@router.post("", response_model=SignupStarted, status_code=status.HTTP_201_CREATED)
def start_signup(
    name: NamePath,
    body: SignupCreate,
    request: Request,
    response: Response,
    key: ApiKeyDep,
    conn: ConnDep,
    container: ContainerDep,
) -> dict[str, Any]:
    """Start the SMS double opt-in: the number gets the program's disclosure and must reply YES."""
    try:
        program = require_program(conn, name)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if body.occurred_at.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "occurred_at: give a time zone (e.g. …Z)")
    client_ip = request.client.host if request.client else None
    evidence = {
        **body.evidence,
        "source": body.source,
        "disclosure_text": body.disclosure_text,
        "consent_given_at": body.occurred_at.isoformat(),
        "api_key": key,
        "ip": client_ip,
    }
    try:
        started = signup_service.start_for_phone(
            conn,
            container.clock,
            program=program,
            phone=body.phone,
            region=container.settings.default_region,
            channel=Channel.API,
            evidence=evidence,
            occurred_at=body.occurred_at,
        )
    except InvalidPhoneNumber as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"phone: {exc}") from None
    except OptedOut as exc:  # the number said STOP minutes ago: nothing is sent
        raise HTTPException(status.HTTP_409_CONFLICT, f"not started: {exc}") from None
    except (ConsentRefused, signup_service.SignupError) as exc:  # evidence, time of consent, disclosure
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if started.outcome != "pending":
        response.status_code = status.HTTP_200_OK
    public = None
    if started.signup is not None:
        public = {**started.signup, "phone": started.contact["phone"], "program": program["name"]}
    return {"outcome": started.outcome, "signup": public}


@router.get("", response_model=list[SignupPublic])
def list_signups(
    name: NamePath,
    _key: ApiKeyDep,
    conn: ConnDep,
    status_: Annotated[
        Literal["pending", "confirmed", "expired", "cancelled"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    try:
        program = require_program(conn, name)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return signup_repo.listing(conn, program_id=program["id"], status=status_, limit=limit)
