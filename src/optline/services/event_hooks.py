"""Outbound event webhooks: endpoints, the event outbox, and the deliverer.

``emit`` runs inside the transaction of the change that causes the event (a consent change, a receipt, a
review item), so an event exists exactly when its change committed. When no enabled endpoint subscribes to
the event type it writes nothing: one SELECT over the (few) endpoints is all the hot path pays.

``deliver_due`` is called by the worker loop (entrypoints/worker.py: ``optline worker`` and the in-process
worker of ``optline serve``). It claims due deliveries (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's
write lock elsewhere) by moving their due time past the HTTP timeout, commits, POSTs outside any
transaction, then records the attempt. A delivery is marked delivered once, on its first 2xx, and never
sent again unless an operator replays it; a deliverer that dies mid-request leaves the claim to expire and
the next one sends again with the same ``webhook-id``, which receivers use to deduplicate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Select, event, insert, select, update

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.database import Database, one_of
from optline.adapters.db.tables import messages, webhook_attempts, webhook_deliveries, webhook_endpoints
from optline.adapters.secret_box import SecretBox, SecretBoxError, is_sealed
from optline.domain import event_hooks as rules

if TYPE_CHECKING:  # at run time only the deliverer needs httpx (post): emit() runs in every CLI command
    import httpx

log = logging.getLogger("optline.event_hooks")


class HookError(ValueError):
    """An endpoint or delivery that does not exist or cannot be changed; the message says which."""


# -- endpoints ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedEndpoint:
    id: int
    url: str
    events: list[str]
    secret: str  # shown once


def create_endpoint(
    conn: Connection,
    clock: Clock,
    box: SecretBox,
    *,
    url: str,
    events: list[str],
    description: str = "",
    development: bool,
) -> CreatedEndpoint:
    """Register an endpoint. Its signing secret is stored encrypted (``box``) and returned in clear this
    once, for the operator to copy into the receiver."""
    checked = rules.check_url(url, development=development)
    chosen = rules.parse_events(events)
    secret = rules.new_secret()
    endpoint_id = conn.execute(
        insert(webhook_endpoints)
        .values(
            url=checked,
            description=description.strip()[:200],
            secret=box.seal(secret),
            events=chosen,
            enabled=True,
            created_at=clock.now(),
        )
        .returning(webhook_endpoints.c.id)
    ).scalar_one()
    _forget_subscribers(conn)
    return CreatedEndpoint(int(endpoint_id), checked, chosen, secret)


def list_endpoints(conn: Connection) -> list[dict[str, Any]]:
    cols = [c for c in webhook_endpoints.c if c.name != "secret"]
    return [dict(r._mapping) for r in conn.execute(select(*cols).order_by(webhook_endpoints.c.id))]


def disable_endpoint(conn: Connection, clock: Clock, endpoint_id: int) -> None:
    """Stop sending to an endpoint (its deliveries and attempts stay visible; pending ones wait)."""
    _switch(conn, endpoint_id, enabled=False, at=clock.now())


def enable_endpoint(conn: Connection, clock: Clock, endpoint_id: int) -> None:
    """Send to a disabled endpoint again: its pending deliveries resume where they stopped. Events that
    happened while it was disabled were not queued for it (a disabled endpoint subscribes to nothing)."""
    _switch(conn, endpoint_id, enabled=True, at=None)


def _switch(conn: Connection, endpoint_id: int, *, enabled: bool, at: datetime | None) -> None:
    done = conn.execute(
        update(webhook_endpoints)
        .where((webhook_endpoints.c.id == endpoint_id) & (webhook_endpoints.c.enabled == (not enabled)))
        .values(enabled=enabled, disabled_at=at)
    ).rowcount
    if not done:
        raise HookError(f"no {'disabled' if enabled else 'enabled'} webhook endpoint {endpoint_id}")
    _forget_subscribers(conn)


# -- the outbox -----------------------------------------------------------------------------------------


Payload = Mapping[str, Any]


# Who subscribes to what, per database, re-read at most this often: the lookup runs in every consent change
# and receipt, and most installations have no endpoint at all. An endpoint registered by another process
# starts receiving events within this many seconds; one registered by this process at once.
SUBSCRIBERS_TTL = 1.0
_subscribers: weakref.WeakKeyDictionary[Engine, tuple[float, dict[str, list[int]]]] = (
    weakref.WeakKeyDictionary()
)


def subscribers(conn: Connection, event_type: rules.EventType) -> list[int]:
    """Ids of the enabled endpoints that chose ``event_type`` (cached for ``SUBSCRIBERS_TTL`` seconds)."""
    cached = _subscribers.get(conn.engine)
    if cached is None or time.monotonic() - cached[0] > SUBSCRIBERS_TTL:
        by_type: dict[str, list[int]] = {}
        for r in conn.execute(
            select(webhook_endpoints.c.id, webhook_endpoints.c.events).where(webhook_endpoints.c.enabled)
        ):
            for t in r.events or []:
                by_type.setdefault(t, []).append(r.id)
        cached = (time.monotonic(), by_type)
        _subscribers[conn.engine] = cached
    return cached[1].get(event_type.value, [])


def _forget_subscribers(conn: Connection) -> None:
    """This process changed the endpoints: the next lookup reads them again. Also once this transaction
    commits, in case another thread cached the state before the commit in between."""
    engine = conn.engine
    _subscribers.pop(engine, None)
    event.listen(conn, "commit", lambda _conn: _subscribers.pop(engine, None), once=True)


def emit(
    conn: Connection, clock: Clock, event_type: rules.EventType, data: Payload | Callable[[], Payload]
) -> int:
    """Queue one event for every enabled endpoint that subscribes to it, in the caller's transaction.
    ``data`` may be a function: it is called (and its queries run) only when someone subscribes. Returns
    how many deliveries were queued (0, having written nothing, when nobody subscribes)."""
    endpoints = subscribers(conn, event_type)
    if not endpoints:
        return 0
    return _queue(conn, clock, event_type, endpoints, [data() if callable(data) else data])


def emit_many(
    conn: Connection, clock: Clock, event_type: rules.EventType, data: Callable[[], Sequence[Payload]]
) -> int:
    """``emit`` for a batch of events of one type (contacts import)."""
    endpoints = subscribers(conn, event_type)
    if not endpoints:
        return 0
    return _queue(conn, clock, event_type, endpoints, data())


def _queue(
    conn: Connection,
    clock: Clock,
    event_type: rules.EventType,
    endpoints: list[int],
    payloads: Sequence[Payload],
) -> int:
    now = clock.now()
    rows = []
    for payload in payloads:
        body = json.dumps(
            {"type": event_type.value, "timestamp": now.isoformat(), "data": dict(payload)},
            separators=(",", ":"),
            default=str,
            ensure_ascii=False,
        )
        rows += [
            {
                "endpoint_id": eid,
                "message_id": rules.new_message_id(),
                "event_type": event_type.value,
                "body": body,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "retry_until": now + rules.RETRY_WINDOW,
                "replay": False,
                "created_at": now,
            }
            for eid in endpoints
        ]
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
    return len(rows)


# A message's final statuses and the event each one is pushed as.
MESSAGE_OUTCOMES = {
    "delivered": rules.EventType.MESSAGE_DELIVERED,
    "undelivered": rules.EventType.MESSAGE_FAILED,
    "failed": rules.EventType.MESSAGE_FAILED,
}


def _message_payload(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "message_id": message["id"], "contact_id": message["contact_id"], "phone": message["to_phone"],
        "program_id": message["program_id"], "campaign_id": message["campaign_id"], "kind": message["kind"],
        "status": message["status"], "provider": message["provider"],
        "provider_message_id": message["provider_message_id"], "error_code": message.get("error_code"),
        "error_message": message.get("error_message"),
    }  # fmt: skip


def emit_message_outcome(conn: Connection, clock: Clock, message: Mapping[str, Any]) -> int:
    """Queue message.delivered / message.failed for a message that just reached ``message["status"]``
    (a delivery receipt, services/receipts.py)."""
    return emit(conn, clock, MESSAGE_OUTCOMES[message["status"]], lambda: _message_payload(message))


def emit_message_failures(conn: Connection, clock: Clock, message_ids: list[int]) -> int:
    """Queue message.failed for messages dispatch just gave up on (services/dispatch.py ``_write``)."""

    def payloads() -> list[Payload]:
        rows = conn.execute(select(messages).where(one_of(conn, messages.c.id, sorted(message_ids))))
        return [_message_payload(dict(r._mapping)) for r in rows]

    return emit_many(conn, clock, rules.EventType.MESSAGE_FAILED, payloads)


def replay(conn: Connection, clock: Clock, delivery_id: int) -> None:
    """Send a delivery again (same webhook-id and body), with a fresh day of retries."""
    now = clock.now()
    done = conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(status="pending", next_attempt_at=now, retry_until=now + rules.RETRY_WINDOW, replay=True)
    ).rowcount
    if not done:
        raise HookError(f"no webhook delivery {delivery_id}")


# -- the deliverer --------------------------------------------------------------------------------------


@dataclass
class DeliveryCounts:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.failed


@dataclass(frozen=True)
class DelivererConfig:
    retry_base: timedelta = timedelta(seconds=30)
    timeout: float = 10.0
    batch_size: int = 20

    @property
    def lease(self) -> timedelta:
        # Longer than any request can take, so a live deliverer's claim never falls due under it.
        return timedelta(seconds=self.timeout * 3 + 5)


def _due(now: datetime) -> Select[tuple[int]]:
    return (
        select(webhook_deliveries.c.id)
        .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
        .where(
            (webhook_deliveries.c.status == "pending")
            & (webhook_deliveries.c.next_attempt_at <= now)
            & webhook_endpoints.c.enabled
        )
    )


def claim(conn: Connection, clock: Clock, config: DelivererConfig) -> list[dict[str, Any]]:
    now = clock.now()
    due = (
        _due(now)
        .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
        .limit(config.batch_size)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(of=webhook_deliveries, skip_locked=True)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id.in_(ids))
        .values(next_attempt_at=now + config.lease)
    )
    rows = conn.execute(
        select(webhook_deliveries, webhook_endpoints.c.url, webhook_endpoints.c.secret)
        .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
        .where(webhook_deliveries.c.id.in_(ids))
        .order_by(webhook_deliveries.c.id)
    )
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    duration_ms: int
    snippet: str
    error: str | None


def post(
    client: httpx.Client, clock: Clock, delivery: Mapping[str, Any], secret: str, timeout: float
) -> Attempt:
    """Sign ``delivery`` with its endpoint's ``secret`` (in clear) and send it."""
    import httpx  # imported by the caller already (it made ``client``): a lookup, not a load

    body = delivery["body"].encode()
    timestamp = int(clock.now().timestamp())
    headers = rules.headers(secret, delivery["message_id"], timestamp, body)
    started = time.monotonic()
    try:
        response = client.post(delivery["url"], content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        # The exception's class and text name the cause (refused, timed out, TLS) without any secret.
        error = f"{type(exc).__name__}: {exc}"[:300]
        return Attempt(None, _ms_since(started), "", error)
    return Attempt(response.status_code, _ms_since(started), response.text[: rules.SNIPPET_CHARS], None)


def _sign_and_post(
    client: httpx.Client, clock: Clock, delivery: Mapping[str, Any], box: SecretBox, timeout: float
) -> Attempt:
    what = f"the signing secret of webhook endpoint {delivery['endpoint_id']}"
    try:
        secret = box.open(delivery["secret"], what=what)
    except SecretBoxError as exc:
        # Not sent (an unsigned or wrongly signed event is worse than a late one): recorded as a failed
        # attempt, so the delivery retries with backoff and sends once the key is configured again.
        log.error("webhook delivery %s not sent: %s", delivery["id"], exc)
        return Attempt(None, 0, "", str(exc)[:300])
    return post(client, clock, delivery, secret, timeout)


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def record_attempt(
    conn: Connection, clock: Clock, delivery: Mapping[str, Any], attempt: Attempt, config: DelivererConfig
) -> str:
    """Store the attempt and move the delivery on; returns its new status."""
    now = clock.now()
    conn.execute(
        insert(webhook_attempts).values(
            delivery_id=delivery["id"],
            attempted_at=now,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            response_snippet=attempt.snippet,
            error=attempt.error,
            replay=delivery["replay"],
        )
    )
    # Counted in SQL and guarded on 'pending': a deliverer whose claim lapsed and another that re-claimed
    # the row may both record; neither loses the other's attempt or undoes a success.
    values: dict[str, Any] = {
        "attempts": webhook_deliveries.c.attempts + 1,
        "last_status_code": attempt.status_code,
    }
    if attempt.status_code is not None and rules.is_success(attempt.status_code):
        values.update(status="delivered", delivered_at=now, replay=False)
    else:
        failures = _failures_since_success(conn, delivery["id"])
        next_at = now + rules.retry_delay(failures, config.retry_base)
        if next_at > as_utc(delivery["retry_until"]):
            values.update(status="failed", replay=False)
        else:
            values.update(next_attempt_at=next_at)
    conn.execute(
        update(webhook_deliveries)
        .where((webhook_deliveries.c.id == delivery["id"]) & (webhook_deliveries.c.status == "pending"))
        .values(**values)
    )
    return str(values.get("status", "pending"))


def _failures_since_success(conn: Connection, delivery_id: int) -> int:
    """Failed attempts in a row (the backoff starts over after a replay of a delivered event)."""
    rows = conn.execute(
        select(webhook_attempts.c.status_code)
        .where(webhook_attempts.c.delivery_id == delivery_id)
        .order_by(webhook_attempts.c.id.desc())
        .limit(64)
    ).scalars()
    count = 0
    for code in rows:
        if code is not None and rules.is_success(code):
            break
        count += 1
    return count


def deliver_due(
    db: Database,
    clock: Clock,
    client: httpx.Client,
    config: DelivererConfig,
    box: SecretBox,
    *,
    stop: threading.Event | None = None,
) -> DeliveryCounts:
    """One batch: claim what is due, send it, record each attempt. When ``stop`` is set, the rest of the
    batch is left to fall due again after its lease. ``box`` opens the endpoints' stored signing secrets."""
    counts = DeliveryCounts()
    with db.read() as conn:  # most polls find nothing: then no write transaction (SQLite's write lock) at all
        if not conn.execute(_due(clock.now()).limit(1)).first():
            return counts
    with db.transaction() as conn:
        claimed = claim(conn, clock, config)
    for delivery in claimed:
        if stop is not None and stop.is_set():
            break
        attempt = _sign_and_post(client, clock, delivery, box, config.timeout)
        with db.transaction() as conn:
            status = record_attempt(conn, clock, delivery, attempt, config)
        if status == "delivered":
            counts.delivered += 1
        elif status == "failed":
            counts.failed += 1
            log.warning(
                "webhook delivery %s to endpoint %s failed for a day; replay it from the dashboard",
                delivery["id"],
                delivery["endpoint_id"],
            )
        else:
            counts.retrying += 1
    return counts


# -- rotation -------------------------------------------------------------------------------------------


@dataclass
class RotationCounts:
    encrypted: int = 0  # legacy clear text, now encrypted
    re_encrypted: int = 0  # sealed under a previous key, now under the current one
    unchanged: int = 0  # already under the current key
    unreadable: list[int] = field(default_factory=list)  # endpoints whose secret no configured key opens


def rotate_secrets(conn: Connection, box: SecretBox) -> RotationCounts:
    """Re-encrypt every endpoint's signing secret under the current key (``optline secrets rotate``), in the
    caller's transaction. A secret no configured key opens is left as it is and named in ``unreadable``:
    one lost key must not keep every other secret from moving to the new key."""
    query = select(webhook_endpoints.c.id, webhook_endpoints.c.secret).order_by(webhook_endpoints.c.id)
    if conn.dialect.name == "postgresql":
        # Two rotations at once: the second waits and then finds everything current. (An endpoint created
        # meanwhile is sealed under the current key anyway; SQLite's write transaction serialises all this.)
        query = query.with_for_update()
    counts = RotationCounts()
    for row in conn.execute(query).all():
        if box.is_current(row.secret):
            counts.unchanged += 1
            continue
        try:
            sealed = box.rotate(row.secret, what=f"webhook endpoint {row.id}'s secret")
        except SecretBoxError:
            counts.unreadable.append(row.id)
            continue
        conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == row.id).values(secret=sealed))
        if is_sealed(row.secret):
            counts.re_encrypted += 1
        else:
            counts.encrypted += 1
    return counts


# -- reading --------------------------------------------------------------------------------------------


def deliveries(conn: Connection, *, endpoint_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent deliveries, newest first, each with its attempts (oldest first)."""
    query = (
        select(webhook_deliveries, webhook_endpoints.c.url)
        .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
        .order_by(webhook_deliveries.c.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
    rows = [dict(r._mapping) for r in conn.execute(query)]
    by_id: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if by_id:
        for a in conn.execute(
            select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_(list(by_id)))
            .order_by(webhook_attempts.c.id)
        ):
            by_id[a.delivery_id].append(dict(a._mapping))
    for r in rows:
        r["attempt_list"] = by_id[r["id"]]
    return rows
