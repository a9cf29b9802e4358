"""What the dashboard shows of a campaign: the live preview of a draft, and a campaign's progress.

Reads only, over the same rules the CLI and API use: ``services.campaigns.lint`` (domain/lint.py),
``domain.compose`` and ``domain.segments`` for the text, ``services.audience.dry_run`` for who receives it.
Nothing here decides anything a send depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from optline.adapters.clock import Clock
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import consent_events, contacts, inbound_messages, messages
from optline.domain import compose, segments
from optline.domain import lint as lint_rules
from optline.domain.optout_links import SAMPLE_TOKEN
from optline.services import audience
from optline.services import campaigns as campaign_service
from optline.services.outbox import Kind

# The funnel, in the order a message moves through it.
PENDING = ("queued", "claimed")
HANDED_OVER = ("sending", "sent", "delivered", "undelivered")
FAILED = ("failed", "undelivered")
STOPPED = ("suppressed", "skipped", "cancelled")
PAGE_SIZE = 50


@dataclass
class Preview:
    text: str | None  # the message as a recipient sees it (None: the template cannot be rendered)
    sample_of: str  # whose fields filled it: a recipient's phone, or "placeholders"
    lint: lint_rules.LintResult
    info: segments.SegmentInfo | None
    recipients: int | None = None
    excluded: dict[str, int] = field(default_factory=dict)
    filter_error: str | None = None

    @property
    def ucs2(self) -> list[tuple[str, str]]:
        """The characters that force UCS-2, each with its code point (a look-alike quote is invisible)."""
        return [(ch, f"U+{ord(ch[0]):04X}") for ch in (self.info.ucs2_chars if self.info else ())]


def _sample_recipient(
    conn: Connection, program_id: int, audience_filter: Mapping[str, Any]
) -> dict[str, Any] | None:
    rows = audience.audience_rows(conn, program_id, audience_filter)
    row = conn.execute(
        select(contacts.c.phone, contacts.c.attributes, contacts.c.locale)
        .join(rows, rows.c.contact_id == contacts.c.id)
        .where(rows.c.reason.is_(None))
        .order_by(contacts.c.id)
        .limit(1)
    ).first()
    return dict(row._mapping) if row else None


def preview(
    conn: Connection,
    clock: Clock,
    *,
    program_id: int,
    template: str,
    message_type: str,
    audience_filter: Mapping[str, Any],
    at: datetime | None,
    public_url: str,
) -> Preview:
    """The draft as it would go: lint (the campaign service's), the text for one recipient, the dry run."""
    program = program_repo.get(conn, program_id)
    if program is None:
        raise LookupError(f"no program with id {program_id}")
    draft: dict[str, Any] = {"program_id": program_id, "template": template, "message_type": message_type,
             "audience_filter": dict(audience_filter), "scheduled_at": at}  # fmt: skip
    filter_error = None
    try:
        audience.check_filter(conn, program_id, audience_filter)
    except audience.FilterError as exc:
        filter_error, draft["audience_filter"] = str(exc), {}
    result = campaign_service.lint(conn, clock, draft, at, public_url=public_url)
    sample = None if filter_error else _sample_recipient(conn, program_id, draft["audience_filter"])
    text, sample_of = None, "placeholders"
    attempts: list[tuple[Mapping[str, Any], str | None, str]] = []
    if sample is not None:
        attempts.append((sample["attributes"] or {}, sample["locale"], str(sample["phone"])))
    try:
        placeholders = {f: f"[{f}]" for f in compose.template_fields(template)}
    except compose.TemplateError:
        placeholders = {}
    attempts.append((placeholders, None, "placeholders"))
    for attributes, locale, who in attempts:
        try:
            text = compose.compose(
                template,
                brand=program["brand"],
                program_name=program["name"],
                phone=who if who != "placeholders" else "+15555550100",
                attributes=attributes,
                locale=locale,
                settings=program.get("settings") or {},
                marketing=message_type == Kind.MARKETING.value,
                first_this_month=True,
                public_url=public_url,
                optout_token=SAMPLE_TOKEN,
            ).body
        except compose.TemplateError:
            continue
        sample_of = who
        break
    out = Preview(text, sample_of, result, segments.count(text) if text is not None else None)
    out.filter_error = filter_error
    if not filter_error:
        dry = audience.dry_run(conn, program_id, audience_filter)
        out.recipients, out.excluded = dry.recipients, {k: n for k, n in dry.excluded.items() if n}
    return out


@dataclass
class Progress:
    campaign: dict[str, Any]
    program: dict[str, Any]
    counts: dict[str, int]
    deferred: int
    deferred_first: datetime | None
    deferred_last: datetime | None
    failures: list[tuple[str, int]]
    replies: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, *statuses: str) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def funnel(self) -> list[tuple[str, int]]:
        """queued → handed over → delivered, each step counting the messages that reached it."""
        return [
            ("queued", self.total),
            ("handed over", self.of(*HANDED_OVER)),
            ("delivered", self.of("delivered")),
        ]


def progress(conn: Connection, campaign_id: int) -> Progress:
    campaign = campaign_service.get_by_id(conn, campaign_id)
    program = program_repo.get(conn, campaign["program_id"]) or {}
    counts = campaign_service.status(conn, campaign).counts
    deferred, first, last = campaign_service.deferred_window(conn, campaign)
    reason = func.coalesce(messages.c.reason, messages.c.error_code, messages.c.status)
    failures = conn.execute(
        select(messages.c.status, reason, func.count())
        .where(messages.c.campaign_id == campaign_id, messages.c.status.in_((*FAILED, *STOPPED)))
        .group_by(messages.c.status, reason)
        .order_by(func.count().desc())
    ).all()
    replies = conn.execute(
        select(inbound_messages.c.intent, func.count())
        .where(inbound_messages.c.attributed_campaign_id == campaign_id)
        .group_by(inbound_messages.c.intent)
        .order_by(func.count().desc())
    ).all()
    return Progress(
        campaign,
        program,
        counts,
        deferred,
        first,
        last,
        failures=[(f"{s}: {r}" if r != s else s, int(n)) for s, r, n in failures],
        replies=[(str(i), int(n)) for i, n in replies],
    )


def recent_replies(conn: Connection, campaign_id: int, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            inbound_messages.c.from_phone,
            inbound_messages.c.body,
            inbound_messages.c.intent,
            inbound_messages.c.received_at,
        )
        .where(inbound_messages.c.attributed_campaign_id == campaign_id)
        .order_by(inbound_messages.c.received_at.desc(), inbound_messages.c.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def message_page(
    conn: Connection, campaign_id: int, after: int = 0, limit: int = PAGE_SIZE
) -> list[dict[str, Any]]:
    """The campaign's messages in id order from ``after`` (keyset), each with the consent that authorised it:
    the ledger event the audience (and then the send-time check) found for that person."""
    rows = conn.execute(
        select(
            messages.c.id,
            messages.c.to_phone,
            messages.c.status,
            messages.c.reason,
            messages.c.body,
            messages.c.segments,
            messages.c.not_before,
            messages.c.sent_at,
            messages.c.delivered_at,
            messages.c.consent_event_id,
            consent_events.c.seq.label("consent_seq"),
            consent_events.c.action.label("consent_action"),
            consent_events.c.channel.label("consent_channel"),
            consent_events.c.occurred_at.label("consent_at"),
            consent_events.c.evidence.label("consent_evidence"),
        )
        .outerjoin(consent_events, consent_events.c.id == messages.c.consent_event_id)
        .where(messages.c.campaign_id == campaign_id, messages.c.id > after)
        .order_by(messages.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]
