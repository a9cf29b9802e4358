"""``optline hooks``: outbound event webhooks (register, list, disable, enable, see deliveries, replay)."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.table import Table
from sqlalchemy import Connection

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.tables import MAX_ID
from optline.domain.event_hooks import EVENT_TYPES, EndpointError
from optline.entrypoints.cli.common import console, container, fail
from optline.services import event_hooks

app = typer.Typer(help="Push consent and message events to your own HTTPS endpoints.", no_args_is_help=True)


@app.command("add")
def add(
    url: str = typer.Argument(..., help="https:// URL (http only for localhost, or in development)"),
    event: list[str] = typer.Option(..., "--event", "-e", help=f"repeat for each: {', '.join(EVENT_TYPES)}"),
    description: str = typer.Option("", help="what the endpoint is, for the dashboard"),
) -> None:
    """Register an endpoint; prints its signing secret once."""
    c = container()
    try:
        box = c.secret_box()  # before the transaction: it may read the database
        with c.db.transaction() as conn:
            created = event_hooks.create_endpoint(
                conn,
                c.clock,
                box,
                url=url,
                events=event,
                description=description,
                development=c.settings.env == "development",
            )
    except EndpointError as exc:
        fail(str(exc))
    console.print(f"endpoint {created.id}: {created.url} ({', '.join(created.events)})")
    console.print("signing secret (shown once; verify each delivery's webhook-signature with it):")
    print(created.secret)


@app.command("list")
def list_() -> None:
    """The registered endpoints."""
    c = container()
    with c.db.read() as conn:
        rows = event_hooks.list_endpoints(conn)
    table = Table("id", "url", "events", "enabled", "description")
    for r in rows:
        table.add_row(
            str(r["id"]), r["url"], ", ".join(r["events"]), "yes" if r["enabled"] else "no", r["description"]
        )
    console.print(table if rows else "no webhook endpoints (add one: optline hooks add URL --event opt_out)")


@app.command("disable")
def disable(
    endpoint_id: int = typer.Argument(..., min=1, max=MAX_ID, help="the endpoint's id (optline hooks list)"),
) -> None:
    """Stop sending to an endpoint (its deliveries stay visible)."""
    _switch(endpoint_id, event_hooks.disable_endpoint, "disabled")


@app.command("enable")
def enable(
    endpoint_id: int = typer.Argument(..., min=1, max=MAX_ID, help="the endpoint's id (optline hooks list)"),
) -> None:
    """Send to a disabled endpoint again (its pending deliveries resume)."""
    _switch(endpoint_id, event_hooks.enable_endpoint, "enabled")


def _switch(endpoint_id: int, change: Callable[[Connection, Clock, int], None], done: str) -> None:
    c = container()
    try:
        with c.db.transaction() as conn:
            change(conn, c.clock, endpoint_id)
    except event_hooks.HookError as exc:
        fail(str(exc))
    console.print(f"endpoint {endpoint_id} {done}")


@app.command("deliveries")
def deliveries(
    endpoint_id: int | None = typer.Option(
        None, "--endpoint", min=1, max=MAX_ID, help="only this endpoint's"
    ),
    limit: int = typer.Option(20, min=1, max=500),
) -> None:
    """The most recent deliveries and what each attempt got back."""
    c = container()
    with c.db.read() as conn:
        rows = event_hooks.deliveries(conn, endpoint_id=endpoint_id, limit=limit)
    table = Table("id", "endpoint", "event", "webhook-id", "status", "attempts", "last answer")
    for r in rows:
        last = r["attempt_list"][-1] if r["attempt_list"] else None
        answer = "" if last is None else str(last["status_code"] or last["error"])
        table.add_row(
            str(r["id"]),
            str(r["endpoint_id"]),
            r["event_type"],
            r["message_id"],
            r["status"],
            str(r["attempts"]),
            answer,
        )
    console.print(table if rows else "no deliveries yet")


@app.command("replay")
def replay(
    delivery_id: int = typer.Argument(
        ..., min=1, max=MAX_ID, help="the delivery's id (optline hooks deliveries)"
    ),
) -> None:
    """Send a delivery again, with the same webhook-id, on the worker's next pass."""
    c = container()
    try:
        with c.db.transaction() as conn:
            event_hooks.replay(conn, c.clock, delivery_id)
    except event_hooks.HookError as exc:
        fail(str(exc))
    console.print(f"delivery {delivery_id} queued again (at {as_utc(c.clock.now()):%H:%M:%S} UTC)")
