"""/v1/webhook-endpoints and /v1/webhook-deliveries: outbound event webhooks (services/event_hooks.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from optline.domain.event_hooks import EVENT_TYPES, EndpointError
from optline.entrypoints.api.deps import ERRORS, ApiKeyDep, ConnDep, ContainerDep
from optline.entrypoints.api.fields import IdPath, Timestamp, text
from optline.services import event_hooks

router = APIRouter(tags=["webhooks (outbound)"], responses=ERRORS)


class EndpointCreate(BaseModel):
    url: Annotated[str, text(2000, min_length=1)] = Field(
        description="https:// URL (http only for localhost, or in development)"
    )
    events: list[Annotated[str, text(50)]] = Field(
        description=f"any of: {', '.join(EVENT_TYPES)}", max_length=len(EVENT_TYPES) * 2
    )
    description: Annotated[str, text(500)] = ""


class EndpointPublic(BaseModel):
    id: int
    url: str
    description: str
    events: list[str]
    enabled: bool
    created_at: Timestamp
    disabled_at: Timestamp | None = None


class EndpointCreated(EndpointPublic):
    secret: str = Field(description="whsec_… signing secret: shown only in this answer, store it now")


class AttemptPublic(BaseModel):
    attempted_at: Timestamp
    status_code: int | None
    duration_ms: int
    response_snippet: str
    error: str | None
    replay: bool


class DeliveryPublic(BaseModel):
    id: int
    endpoint_id: IdPath
    message_id: str = Field(description="the webhook-id header, the same on every attempt and replay")
    event_type: str
    body: str
    status: str
    attempts: int
    next_attempt_at: Timestamp
    created_at: Timestamp
    delivered_at: Timestamp | None
    attempt_list: list[AttemptPublic]


@router.get("/v1/webhook-endpoints", response_model=list[EndpointPublic])
def list_endpoints(conn: ConnDep, _key: ApiKeyDep) -> list[dict[str, Any]]:
    return event_hooks.list_endpoints(conn)


@router.post("/v1/webhook-endpoints", response_model=EndpointCreated, status_code=status.HTTP_201_CREATED)
def create_endpoint(
    body: EndpointCreate, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, Any]:
    try:
        created = event_hooks.create_endpoint(
            conn,
            container.clock,
            container.secret_box(),
            url=body.url,
            events=body.events,
            description=body.description,
            development=container.settings.env == "development",
        )
    except EndpointError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    (row,) = [e for e in event_hooks.list_endpoints(conn) if e["id"] == created.id]
    return {**row, "secret": created.secret}


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def disable_endpoint(endpoint_id: IdPath, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep) -> None:
    try:
        event_hooks.disable_endpoint(conn, container.clock, endpoint_id)
    except event_hooks.HookError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post("/v1/webhook-endpoints/{endpoint_id}/enable", response_model=EndpointPublic)
def enable_endpoint(
    endpoint_id: IdPath, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, Any]:
    try:
        event_hooks.enable_endpoint(conn, container.clock, endpoint_id)
    except event_hooks.HookError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    (row,) = [e for e in event_hooks.list_endpoints(conn) if e["id"] == endpoint_id]
    return row


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(
    endpoint_id: IdPath, conn: ConnDep, _key: ApiKeyDep, limit: int = Query(50, ge=1, le=500)
) -> list[dict[str, Any]]:
    if not any(e["id"] == endpoint_id for e in event_hooks.list_endpoints(conn)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook endpoint {endpoint_id}")
    return event_hooks.deliveries(conn, endpoint_id=endpoint_id, limit=limit)


@router.post("/v1/webhook-deliveries/{delivery_id}/replay", status_code=status.HTTP_202_ACCEPTED)
def replay_delivery(
    delivery_id: IdPath, conn: ConnDep, container: ContainerDep, _key: ApiKeyDep
) -> dict[str, Any]:
    """Send the delivery again (same webhook-id and body) on the worker's next pass."""
    try:
        event_hooks.replay(conn, container.clock, delivery_id)
    except event_hooks.HookError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return {"id": delivery_id, "status": "pending"}
