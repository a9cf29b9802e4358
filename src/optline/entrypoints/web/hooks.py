"""The dashboard's webhooks page: register endpoints, see every delivery and its attempts, replay one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from optline.domain.event_hooks import EVENT_TYPES, EndpointError
from optline.entrypoints.web.auth import CurrentUser, container_of, require_csrf
from optline.entrypoints.web.dashboard import _page
from optline.entrypoints.web.params import RowId
from optline.services import event_hooks

router = APIRouter(include_in_schema=False)
PATH = "/dashboard/webhooks"

FLASHES = {
    "replayed": "Delivery queued again: the worker sends it with the same webhook-id.",
    "disabled": "Endpoint disabled: nothing more is sent to it.",
    "enabled": "Endpoint enabled: its pending deliveries resume.",
}


def _hooks_page(request: Request, user: dict[str, Any], status_code: int = 200, **ctx: Any) -> Response:
    container = container_of(request)
    with container.db.read() as conn:
        endpoints = event_hooks.list_endpoints(conn)
        deliveries = event_hooks.deliveries(conn, limit=100)
    flash = FLASHES.get(request.query_params.get("flash", ""))
    if flash and "flash_text" not in ctx:
        ctx["flash_text"] = flash
    ctx.setdefault("form", {"events": ["opt_out"]})
    return _page(
        request,
        user,
        "webhooks.html",
        "webhooks",
        status_code,
        endpoints=endpoints,
        deliveries=deliveries,
        event_types=EVENT_TYPES,
        **ctx,
    )


@router.get(PATH)
def webhooks_page(request: Request, user: CurrentUser) -> Response:
    return _hooks_page(request, user)


@router.post(PATH)
def add_endpoint(
    request: Request,
    user: CurrentUser,
    url: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    events: Annotated[list[str] | None, Form()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    form = {"url": url, "description": description, "events": events or []}
    try:
        box = container.secret_box()  # before the transaction: it may read the database
        with container.db.transaction() as conn:
            created = event_hooks.create_endpoint(
                conn,
                container.clock,
                box,
                url=url,
                events=events or [],
                description=description,
                development=container.settings.env == "development",
            )
    except EndpointError as exc:
        return _hooks_page(request, user, 400, form=form, error=str(exc))
    # Rendered, not redirected: the secret is shown on this one page and never again.
    return _hooks_page(request, user, created=created, flash_text="Endpoint added.")


@router.post(PATH + "/endpoints/{endpoint_id}/{switch}")
def switch_endpoint(
    request: Request,
    user: CurrentUser,
    endpoint_id: RowId,
    switch: Literal["enable", "disable"],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    change = event_hooks.enable_endpoint if switch == "enable" else event_hooks.disable_endpoint
    try:
        with container.db.transaction() as conn:
            change(conn, container.clock, endpoint_id)
    except event_hooks.HookError as exc:
        return _hooks_page(request, user, 404, error=str(exc))
    return RedirectResponse(f"{PATH}?flash={switch}d", status_code=303)


@router.post(PATH + "/deliveries/{delivery_id}/replay")
def replay_delivery(
    request: Request, user: CurrentUser, delivery_id: RowId, csrf: Annotated[str, Form()] = ""
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    try:
        with container.db.transaction() as conn:
            event_hooks.replay(conn, container.clock, delivery_id)
    except event_hooks.HookError as exc:
        return _hooks_page(request, user, 404, error=str(exc))
    return RedirectResponse(PATH + "?flash=replayed", status_code=303)
