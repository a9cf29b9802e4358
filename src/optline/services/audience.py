"""A campaign's audience, built set-based in SQL: no Python loop over contacts.

Who is in: the program's subscribers with consent evidence (``subscriptions.status = 'subscribed'``,
``consent_event_id`` set, not held for review), matching the campaign's attribute filter, with an
SMS-capable number, and not on the imported Do-Not-Call list — unless their consent is express written
consent (``express_written_consent``, the one place that rule lives).

``audience`` is the one query: every subscription row of the program with the first reason that excludes
it (NULL: in). ``dry_run`` counts its rows by reason; ``materialise`` inserts the rows whose reason is
NULL in one ``INSERT … SELECT``, so the preview counts exactly what the send queues. The send-time check in dispatch still re-reads consent for
every message: the audience is a snapshot, the check is the guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    case,
    cast,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql import ColumnElement, Select

from optline.adapters.db.tables import consent_events, contacts, dnc_numbers, messages, subscriptions
from optline.domain.consent import Channel, Status
from optline.domain.phones import SMS_CAPABLE

# Contact columns a filter may name directly; any other key is looked up in ``contacts.attributes``.
COLUMN_FILTERS = ("region", "us_state", "locale", "time_zone", "number_type")
EWC_CHANNELS = (Channel.WEB.value, Channel.SMS_KEYWORD.value)
REASONS = ("opted_out", "not_confirmed", "no_consent_evidence", "held", "filtered_out", "invalid_number",
           "not_sms_capable", "dnc_without_express_consent")  # fmt: skip


class FilterError(ValueError):
    """An audience filter that cannot be applied; the message names the key."""


def express_written_consent(conn: Connection) -> ColumnElement[bool]:
    """THE rule (one place): the consent event is express written consent when the person opted in
    themselves through a signed web form or an SMS keyword, or the evidence says
    ``"express_written_consent": true`` (e.g. an imported signed paper form).

    Over ``consent_events`` joined as the subscription's consent event.
    """
    flag = consent_events.c.evidence["express_written_consent"]
    flag_true = flag.as_boolean() if conn.dialect.name == "sqlite" else flag.as_string() == "true"
    return or_(consent_events.c.channel.in_(EWC_CHANNELS), func.coalesce(flag_true, false()))


def parse_filter_items(items: list[str]) -> dict[str, Any]:
    """``key=value[,value]`` items (CLI ``--filter``, one per line in the dashboard) as an audience filter."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise FilterError(f"{item!r}: use key=value (e.g. us_state=CA or tier=gold,silver)")
        values = [v.strip() for v in value.split(",")]
        out[key.strip()] = values if len(values) > 1 else values[0]
    return out


def attribute_keys(conn: Connection, program_id: int) -> list[str]:
    """Every attribute key found on the program's contacts (set-based: one scan, no Python loop)."""
    base = subscriptions.join(contacts, contacts.c.id == subscriptions.c.contact_id)
    if conn.dialect.name == "sqlite":
        each = func.json_each(contacts.c.attributes).table_valued("key")
        stmt = select(each.c.key).distinct().select_from(base).join(each, true())
    else:  # a set-returning function in the select list runs after WHERE, so only objects reach it
        key = func.json_object_keys(contacts.c.attributes)
        stmt = (
            select(key)
            .distinct()
            .select_from(base)
            .where(func.json_typeof(contacts.c.attributes) == "object")
        )
    rows = conn.execute(stmt.where(subscriptions.c.program_id == program_id)).scalars()
    return sorted(str(k) for k in rows)


def _has_attribute(conn: Connection, program_id: int, key: str) -> bool:
    """Whether any of the program's contacts carries ``key`` (stops at the first one)."""
    base = subscriptions.join(contacts, contacts.c.id == subscriptions.c.contact_id)
    if conn.dialect.name == "sqlite":
        each = func.json_each(contacts.c.attributes).table_valued("key")
        stmt = select(literal(1)).select_from(base).join(each, each.c.key == key)
    else:
        stmt = select(literal(1)).select_from(base).where(contacts.c.attributes[key].is_not(None))
    return conn.execute(stmt.where(subscriptions.c.program_id == program_id).limit(1)).first() is not None


def check_filter(conn: Connection, program_id: int, audience_filter: Mapping[str, Any]) -> None:
    """Refuse a filter that cannot mean what it says: a value that is not a value (or list of values), or
    a key that is neither a contact column nor an attribute any of the program's contacts has (a typo
    would otherwise quietly select nobody). The error names the key and the keys that exist."""
    for key, value in (audience_filter or {}).items():
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, dict | list) or v is None for v in values):
            raise FilterError(f"audience filter {key!r}: use a value or a list of values, not {value!r}")
    unknown = [
        k
        for k in (audience_filter or {})
        if k not in COLUMN_FILTERS and not _has_attribute(conn, program_id, k)
    ]
    if unknown:
        known = [*COLUMN_FILTERS, *(k for k in attribute_keys(conn, program_id) if k not in COLUMN_FILTERS)]
        raise FilterError(
            f"unknown audience filter key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(known)}"
        )


def _matches(conn: Connection, key: str, value: Any) -> ColumnElement[bool]:
    """One key's condition, TRUE or FALSE but never NULL: a contact without the field (or with a JSON
    null) does not match. A NULL here would fall through the exclusion CASE as "no reason to exclude"."""
    values = value if isinstance(value, list) else [value]
    if key in COLUMN_FILTERS:
        return func.coalesce(contacts.c[key].in_([str(v) for v in values]), false())
    field = contacts.c.attributes[key]
    options: list[ColumnElement[bool]] = []
    for v in values:
        if isinstance(v, bool):
            options.append(
                field.as_boolean() == v
                if conn.dialect.name == "sqlite"
                else field.as_string() == ("true" if v else "false")
            )
        elif isinstance(v, int | float):
            options.append(
                field.as_float() == float(v) if conn.dialect.name == "sqlite" else field.as_string() == str(v)
            )
        else:
            options.append(field.as_string() == str(v))
    return func.coalesce(or_(*options), false())


def _filter_clause(conn: Connection, audience_filter: Mapping[str, Any]) -> ColumnElement[bool]:
    return and_(true(), *(_matches(conn, k, v) for k, v in (audience_filter or {}).items()))


def _joined() -> Any:
    return (
        subscriptions.join(contacts, contacts.c.id == subscriptions.c.contact_id)
        .outerjoin(consent_events, consent_events.c.id == subscriptions.c.consent_event_id)
        .outerjoin(dnc_numbers, dnc_numbers.c.phone == contacts.c.phone)
    )


def _reason(conn: Connection, audience_filter: Mapping[str, Any]) -> ColumnElement[Any]:
    """Why a subscription is excluded, the first reason that applies; NULL: it is in the audience."""
    return case(
        (subscriptions.c.status == Status.UNSUBSCRIBED.value, "opted_out"),
        (subscriptions.c.status != Status.SUBSCRIBED.value, "not_confirmed"),
        (subscriptions.c.consent_event_id.is_(None), "no_consent_evidence"),
        (subscriptions.c.held == true(), "held"),
        (not_(_filter_clause(conn, audience_filter)), "filtered_out"),
        (contacts.c.number_type == "unknown", "invalid_number"),
        (contacts.c.number_type.not_in(sorted(SMS_CAPABLE)), "not_sms_capable"),
        (
            and_(dnc_numbers.c.phone.is_not(None), not_(express_written_consent(conn))),
            "dnc_without_express_consent",
        ),
        else_=None,
    )


def audience_rows(conn: Connection, program_id: int, audience_filter: Mapping[str, Any] | None) -> Any:
    """THE audience query: one row per subscription of the program with ``reason``, why it is excluded
    (NULL: it receives the campaign). The dry run counts its rows by reason; the send inserts the rows
    whose reason is NULL. One query for both, so the preview counts exactly what the send queues."""
    check_filter(conn, program_id, audience_filter or {})
    return (
        select(
            subscriptions.c.contact_id,
            contacts.c.phone,
            subscriptions.c.consent_event_id,
            _reason(conn, audience_filter or {}).label("reason"),
        )
        .select_from(_joined())
        .where(subscriptions.c.program_id == program_id)
        .subquery("audience")
    )


@dataclass
class DryRun:
    recipients: int
    excluded: dict[str, int]

    @property
    def total(self) -> int:
        return self.recipients + sum(self.excluded.values())


def dry_run(conn: Connection, program_id: int, audience_filter: Mapping[str, Any] | None = None) -> DryRun:
    rows = audience_rows(conn, program_id, audience_filter)
    counts = conn.execute(select(rows.c.reason, func.count()).group_by(rows.c.reason)).all()
    excluded = dict.fromkeys(REASONS, 0)
    recipients = 0
    for r, n in counts:
        if r is None:
            recipients = n
        else:
            excluded[r] = n
    return DryRun(recipients, excluded)


def idempotency_key_sql(campaign_id: int, contact_id: Any) -> ColumnElement[str]:
    """``c<campaign>:<contact>``: one message per contact per campaign, whoever materialises it."""
    return literal(f"c{campaign_id}:", String) + cast(contact_id, String)


def recipients_select(
    conn: Connection, campaign: Mapping[str, Any], program: Mapping[str, Any]
) -> Select[Any]:
    rows = audience_rows(conn, program["id"], campaign.get("audience_filter") or {})
    senders = list(program.get("sender_numbers") or [])
    if len(senders) > 1:  # spread the audience over the program's numbers
        from_phone: ColumnElement[Any] = case(
            *[(rows.c.contact_id % len(senders) == i, s) for i, s in enumerate(senders)], else_=senders[0]
        )
    else:
        from_phone = literal(senders[0] if senders else program.get("short_code"), String)
    now = campaign["_now"]
    return select(
        literal(campaign["id"]),
        literal(program["id"]),
        rows.c.contact_id,
        literal(campaign["message_type"]),
        rows.c.phone,
        from_phone,
        literal(campaign["template"]),
        literal(0),
        literal("queued"),
        idempotency_key_sql(campaign["id"], rows.c.contact_id),
        rows.c.consent_event_id,
        literal(0),
        literal(campaign.get("scheduled_at"), messages.c.not_before.type),
        literal(now, messages.c.created_at.type),
        literal(now, messages.c.updated_at.type),
    ).where(rows.c.reason.is_(None))


INSERT_COLUMNS = ("campaign_id", "program_id", "contact_id", "kind", "to_phone", "from_phone", "body",
                  "segments", "status", "idempotency_key", "consent_event_id", "attempts",
                  "not_before", "created_at", "updated_at")  # fmt: skip


def materialise(conn: Connection, campaign: Mapping[str, Any], program: Mapping[str, Any], now: Any) -> int:
    """Insert the campaign's outbox rows in one ``INSERT … SELECT``; returns how many.

    Rows carry the campaign template as ``body`` with ``segments = 0`` ("not composed yet") and no opt-out
    token: personal fields, the opt-out instruction and the personal opt-out link are made by dispatch
    after the send-time check, per message. Only messages handed over need a token, and a token made
    here would cost a random key in a unique index for every row of the audience.
    """
    stmt = insert(messages).from_select(
        [messages.c[c] for c in INSERT_COLUMNS], recipients_select(conn, {**campaign, "_now": now}, program)
    )
    return int(conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount or 0)


def missing_fields(
    conn: Connection, program_id: int, audience_filter: Mapping[str, Any], fields: set[str]
) -> tuple[int, dict[str, int]]:
    """(recipients, per field how many of them have no value for it): lint warns before a send fails.

    Absent, JSON null and empty count as missing (a blank would read "Hi , …"). One query for all fields.
    """
    names = sorted(fields)
    counts = [
        func.count(case((func.coalesce(contacts.c.attributes[f].as_string(), "") == "", 1))) for f in names
    ]
    rows = audience_rows(conn, program_id, audience_filter)  # the same audience the send queues
    row = conn.execute(
        select(func.count(), *counts)
        .select_from(rows.join(contacts, contacts.c.id == rows.c.contact_id))
        .where(rows.c.reason.is_(None))
    ).one()
    return int(row[0]), {f: int(n) for f, n in zip(names, row[1:], strict=True)}
