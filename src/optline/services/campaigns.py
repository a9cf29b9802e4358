"""Campaign use cases: create, lint, schedule, send, pause, resume, cancel, status.

Lifecycle: ``draft`` → (``scheduled``) → ``sending`` ⇄ ``paused`` → ``done`` | ``cancelled``.
``send`` lints (errors block), materialises the audience into the outbox in one ``INSERT … SELECT`` and
sets ``sending``; workers then dispatch. ``schedule`` does the same with every message's ``not_before`` at
the scheduled time. Pausing stops claims (claimed messages are released back to the queue at the check);
cancelling marks every message not yet handed over ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from optline.adapters.clock import Clock, as_utc
from optline.adapters.db.tables import campaign_status_counts, campaigns, contacts, messages, subscriptions
from optline.domain import compose
from optline.domain import lint as lint_rules
from optline.services import audience
from optline.services.outbox import Kind
from optline.services.programs import require_program

MESSAGE_TYPES = (Kind.MARKETING.value, Kind.TRANSACTIONAL.value)
ATTRIBUTE_SAMPLE = 1000  # contacts sampled to learn which attribute fields the audience has


class CampaignError(ValueError):
    """A campaign operation that cannot be done now; the message says why."""


@dataclass
class Status:
    campaign: dict[str, Any]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("queued", "claimed", "sending"))


def create(
    conn: Connection,
    clock: Clock,
    *,
    program: str,
    name: str,
    template: str,
    message_type: str = "marketing",
    audience_filter: Mapping[str, Any] | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    prog = require_program(conn, program)
    if message_type not in MESSAGE_TYPES:
        raise CampaignError(f"message type must be one of {', '.join(MESSAGE_TYPES)}, not {message_type!r}")
    if not template.strip():
        raise CampaignError("the campaign template is empty")
    if conn.execute(
        select(campaigns.c.id).where(campaigns.c.program_id == prog["id"], campaigns.c.name == name)
    ).first():
        raise CampaignError(f"program {program!r} already has a campaign named {name!r}")
    audience.check_filter(conn, prog["id"], audience_filter or {})  # FilterError naming the bad key
    row = conn.execute(
        insert(campaigns)
        .values(
            program_id=prog["id"],
            name=name,
            template=template,
            message_type=message_type,
            tag=tag,
            audience_filter=dict(audience_filter or {}),
            status="draft",
            created_at=clock.now(),
        )
        .returning(*campaigns.c)
    ).one()
    return dict(row._mapping)


def get(conn: Connection, program: str, name: str) -> dict[str, Any]:
    prog = require_program(conn, program)
    row = conn.execute(
        select(campaigns).where(campaigns.c.program_id == prog["id"], campaigns.c.name == name)
    ).first()
    if row is None:
        known = [
            r.name for r in conn.execute(select(campaigns.c.name).where(campaigns.c.program_id == prog["id"]))
        ]
        raise LookupError(
            f"program {program!r} has no campaign {name!r} (campaigns: {', '.join(known) or 'none'})"
        )
    return dict(row._mapping)


def get_by_id(conn: Connection, campaign_id: int) -> dict[str, Any]:
    row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
    if row is None:
        raise LookupError(f"no campaign with id {campaign_id}")
    return dict(row._mapping)


def list_all(conn: Connection, program: str | None = None) -> list[dict[str, Any]]:
    stmt = select(campaigns).order_by(campaigns.c.id)
    if program:
        stmt = stmt.where(campaigns.c.program_id == require_program(conn, program)["id"])
    return [dict(r._mapping) for r in conn.execute(stmt)]


def known_fields(conn: Connection, program_id: int) -> set[str]:
    """Attribute names found on (a sample of) the program's subscribers: what a template may use."""
    rows = conn.execute(
        select(contacts.c.attributes)
        .join(subscriptions, subscriptions.c.contact_id == contacts.c.id)
        .where(subscriptions.c.program_id == program_id)
        .limit(ATTRIBUTE_SAMPLE)
    )
    names: set[str] = set()
    for (attrs,) in rows:
        names.update((attrs or {}).keys())
    return names


def audience_zones(conn: Connection, program_id: int) -> list[str]:
    rows = conn.execute(
        select(contacts.c.time_zone)
        .distinct()
        .join(subscriptions, subscriptions.c.contact_id == contacts.c.id)
        .where(subscriptions.c.program_id == program_id, contacts.c.time_zone.is_not(None))
    )
    return [r[0] for r in rows]


def lint(
    conn: Connection,
    clock: Clock,
    campaign: Mapping[str, Any],
    at: datetime | None = None,
    *,
    public_url: str,
) -> lint_rules.LintResult:
    """``public_url``: OPTLINE_PUBLIC_URL, so the segment estimate measures the opt-out link recipients get."""
    from optline.adapters.db import programs as program_repo

    program = program_repo.get(conn, campaign["program_id"])
    assert program is not None
    send_at = at or (as_utc(campaign["scheduled_at"]) if campaign.get("scheduled_at") else clock.now())
    known = known_fields(conn, program["id"])
    try:
        needed = compose.required_fields(campaign["template"]) & known
    except compose.TemplateError:
        needed = set()  # lint reports the syntax error itself
    recipients, missing = (
        audience.missing_fields(conn, program["id"], campaign.get("audience_filter") or {}, needed)
        if needed
        else (None, {})
    )
    return lint_rules.lint(
        campaign["template"],
        brand=program["brand"],
        settings=program.get("settings") or {},
        known_fields=known,
        public_url=public_url,
        marketing=campaign["message_type"] == Kind.MARKETING.value,
        send_at=send_at,
        audience_zones=audience_zones(conn, program["id"]),
        missing=missing,
        recipients=recipients,
    )


def _lock(conn: Connection, campaign_id: int) -> dict[str, Any]:
    stmt = select(campaigns).where(campaigns.c.id == campaign_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return dict(conn.execute(stmt).one()._mapping)


def _set(conn: Connection, campaign_id: int, **values: Any) -> dict[str, Any]:
    row = conn.execute(
        update(campaigns).where(campaigns.c.id == campaign_id).values(**values).returning(*campaigns.c)
    ).one()
    return dict(row._mapping)


def start(
    conn: Connection,
    clock: Clock,
    campaign: Mapping[str, Any],
    *,
    at: datetime | None = None,
    public_url: str,
) -> tuple[dict[str, Any], int]:
    """Lint, materialise the audience and set the campaign sending (``at`` in the future: scheduled).

    Returns (campaign, messages queued). Lint errors raise CampaignError listing them.
    """
    current = _lock(conn, campaign["id"])
    if current["status"] not in ("draft", "scheduled"):
        raise CampaignError(f"campaign {current['name']!r} is {current['status']}; only a draft can be sent")
    result = lint(conn, clock, current, at, public_url=public_url)
    if result.errors:
        raise CampaignError("lint errors block sending: " + "; ".join(f.message for f in result.errors))
    from optline.adapters.db import programs as program_repo

    program = program_repo.get(conn, current["program_id"])
    now = clock.now()
    scheduled = at if at and at > now else None
    queued = audience.materialise(conn, {**current, "scheduled_at": scheduled}, program or {}, now)
    if queued == 0:  # nothing will ever be sent: done now, not "sending" forever
        return _set(conn, current["id"], status="done", started_at=now, finished_at=now), 0
    # Scheduled campaigns are 'sending' too: their messages simply are not due before not_before.
    updated = _set(conn, current["id"], status="sending", started_at=now, scheduled_at=scheduled)
    return updated, queued


def pause(conn: Connection, campaign: Mapping[str, Any]) -> dict[str, Any]:
    current = _lock(conn, campaign["id"])
    if current["status"] != "sending":
        raise CampaignError(
            f"campaign {current['name']!r} is {current['status']}; only a sending campaign pauses"
        )
    return _set(conn, current["id"], status="paused")


def resume(conn: Connection, campaign: Mapping[str, Any]) -> dict[str, Any]:
    current = _lock(conn, campaign["id"])
    if current["status"] != "paused":
        raise CampaignError(
            f"campaign {current['name']!r} is {current['status']}; only a paused campaign resumes"
        )
    return _set(conn, current["id"], status="sending", pause_reason=None)


def cancel(conn: Connection, clock: Clock, campaign: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Cancel: messages not yet handed over become ``cancelled`` (those in flight finish)."""
    current = _lock(conn, campaign["id"])
    if current["status"] in ("done", "cancelled"):
        raise CampaignError(f"campaign {current['name']!r} is already {current['status']}")
    now = clock.now()
    n = conn.execute(
        update(messages)
        .where(
            messages.c.campaign_id == current["id"],
            messages.c.status.in_(("queued", "deferred", "claimed")),
        )
        .values(status="cancelled", reason="campaign cancelled", lease_owner=None, updated_at=now)
    ).rowcount
    return _set(conn, current["id"], status="cancelled", finished_at=now), int(n or 0)


def status(conn: Connection, campaign: Mapping[str, Any]) -> Status:
    """The campaign and its messages per status, read from the counts the database keeps with every write
    (``campaign_status_counts``, adapters/db/rollups.py): a few rows, where a GROUP BY read every message of
    a million-message campaign at each look at its page."""
    csc = campaign_status_counts
    rows = conn.execute(
        select(csc.c.status, func.sum(csc.c.messages))
        .where(csc.c.campaign_id == campaign["id"])
        .group_by(csc.c.status)
    )
    return Status(get_by_id(conn, campaign["id"]), {s: int(n) for s, n in rows if n})


def deferred_window(
    conn: Connection, campaign: Mapping[str, Any]
) -> tuple[int, datetime | None, datetime | None]:
    """Deferred messages (quiet hours, frequency cap): how many, and the earliest and latest time they may go."""
    row = conn.execute(
        select(func.count(), func.min(messages.c.not_before), func.max(messages.c.not_before)).where(
            messages.c.campaign_id == campaign["id"], messages.c.status == "deferred"
        )
    ).one()
    first, last = (as_utc(row[1]) if row[1] else None), (as_utc(row[2]) if row[2] else None)
    return int(row[0]), first, last


def finish_if_done(conn: Connection, clock: Clock, campaign_ids: Iterable[int]) -> None:
    """A sending campaign with nothing queued, claimed, sending or deferred is done."""
    for cid in campaign_ids:
        busy = conn.execute(
            select(messages.c.id)
            .where(
                messages.c.campaign_id == cid,
                messages.c.status.in_(("queued", "claimed", "sending", "deferred")),
            )
            .limit(1)
        ).first()
        if busy is None:
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == cid, campaigns.c.status == "sending")
                .values(status="done", finished_at=clock.now())
            )
