"""/v1/contacts"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from optline.domain.consent import ConsentRefused, OptedOut
from optline.domain.phones import InvalidPhoneNumber
from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import PhonePath
from optline.entrypoints.api.schemas import ConsentRequest, ConsentResult, ContactCreate, ContactPublic
from optline.services import contacts as contact_service

router = APIRouter(prefix="/v1/contacts", tags=["contacts"], responses=ERRORS)


@router.post("", response_model=ContactPublic, status_code=status.HTTP_201_CREATED)
def create_contact(
    body: ContactCreate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, Any]:
    try:
        return contact_service.create_contact(
            conn,
            container.clock,
            body.phone,
            container.settings.default_region,
            attributes=body.attributes,
            locale=body.locale,
            time_zone=body.time_zone,
        )
    except InvalidPhoneNumber as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"phone: {exc}") from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/{phone}", response_model=ContactPublic)
def get_contact(phone: PhonePath, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep) -> dict[str, Any]:
    try:
        found = contact_service.show_contact(conn, phone, container.settings.default_region)
    except InvalidPhoneNumber as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"phone: {exc}") from None
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no contact with phone {phone}")
    return found


@router.post("/{phone}/consent", response_model=ConsentResult, status_code=status.HTTP_201_CREATED)
def change_consent(
    phone: PhonePath,
    body: ConsentRequest,
    request: Request,
    conn: ConnDep,
    container: ContainerDep,
    key: ApiKeyDep,
) -> dict[str, Any]:
    if body.action == "opt_in" and body.occurred_at is None:
        # The time is part of the evidence: when the person consented, not when a system reported it.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "occurred_at: an opt-in needs the time the person consented",
        )
    evidence = {**body.evidence, "api_key": key}
    if request.client:  # the caller of the API, not the person: kept apart from any "ip" evidence
        evidence["api_client_ip"] = request.client.host
    try:
        return contact_service.change_consent(
            conn,
            container.clock,
            phone,
            container.settings.default_region,
            program_name=body.program,
            action=body.action,
            evidence=evidence,
            occurred_at=body.occurred_at,
            brand_wide=True if body.all_programs_of_brand else None,
        )
    except InvalidPhoneNumber as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"phone: {exc}") from None
    except OptedOut as exc:
        # Refused, not turned into a sign-up: this call vouches for a consent, it does not say what the person
        # was shown; a sign-up (its own endpoint) texts them the disclosure and waits for their YES.
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"not subscribed: {exc}. POST /v1/programs/{body.program}/signups starts a sign-up they confirm by "
            "replying YES",
        ) from None
    except ConsentRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
