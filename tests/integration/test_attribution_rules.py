"""The attribution rule case by case: window, program or brand scope, what counts as received."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from optline.adapters.db import contacts
from optline.adapters.db.tables import optout_attributions
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.domain.phones import parse_phone
from optline.services import analytics, consent
from optline.services.programs import create_program
from tests.support import outbox_rows as rows

T = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _opt_out(
    conn: Any,
    container: Container,
    contact: dict[str, Any],
    program: dict[str, Any],
    channel: Channel = Channel.SMS_KEYWORD,
    brand_wide: bool | None = None,
) -> int:
    change = consent.record(
        conn,
        container.clock,
        contact_id=contact["id"],
        program=program,
        action=Action.OPT_OUT,
        channel=channel,
        evidence={"message_text": "STOP"},
        occurred_at=T,
        brand_wide=brand_wide,
    )
    return int(change.event["id"])


def test_attribution_rules(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        deals = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme",
            optout_scope="program",
        )
        news = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme",
            optout_scope="program",
        )
        other = create_program(
            conn, clock, help_contact="https://acme.example/help", name="other", brand="Globex"
        )
        c_deals = rows.campaign(conn, deals, "d", T)
        c_deals2 = rows.campaign(conn, deals, "d2", T)
        c_news = rows.campaign(conn, news, "n", T)
        c_other = rows.campaign(conn, other, "o", T)
        people = [contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0] for i in range(8)]
        cases: dict[str, tuple[int, int | None]] = {}

        p = people[0]  # the last campaign of the program wins, even if another program's came later
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=3), campaign=c_deals)
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=2), campaign=c_deals2)
        rows.message(conn, program=news, contact=p, at=T - timedelta(hours=1), campaign=c_news)
        cases["program scope"] = (_opt_out(conn, container, p, deals), c_deals2["id"])

        p = people[1]  # outside the window: unattributed
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=7, seconds=1), campaign=c_deals)
        cases["outside window"] = (_opt_out(conn, container, p, deals), None)

        p = people[2]  # exactly at the window's edge still counts
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=7), campaign=c_deals)
        cases["window edge"] = (_opt_out(conn, container, p, deals), c_deals["id"])

        p = people[3]  # brand-wide: the last of any program of the brand, not another brand's
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=2), campaign=c_deals)
        rows.message(conn, program=news, contact=p, at=T - timedelta(days=1), campaign=c_news)
        rows.message(conn, program=other, contact=p, at=T - timedelta(hours=1), campaign=c_other)
        cases["brand-wide"] = (_opt_out(conn, container, p, deals, brand_wide=True), c_news["id"])

        p = people[4]  # messages after the opt-out, never sent, or not from a campaign do not count
        rows.message(conn, program=deals, contact=p, at=T + timedelta(minutes=1), campaign=c_deals)
        rows.message(
            conn, program=deals, contact=p, at=T - timedelta(hours=1), campaign=c_deals2, status="failed"
        )
        rows.message(conn, program=deals, contact=p, at=T - timedelta(hours=2), kind="help")
        cases["nothing received"] = (_opt_out(conn, container, p, deals), None)

        p = people[5]  # sent but undelivered still was sent to them
        rows.message(
            conn, program=deals, contact=p, at=T - timedelta(days=1), campaign=c_deals, status="undelivered"
        )
        cases["undelivered"] = (_opt_out(conn, container, p, deals, Channel.PROVIDER), c_deals["id"])

        analytics.refresh(conn, clock, window_days=7)
        got = {r.event_id: r for r in conn.execute(select(optout_attributions))}
    for name, (event_id, campaign_id) in cases.items():
        assert got[event_id].campaign_id == campaign_id, name
    assert got[cases["brand-wide"][0]].program_id == news["id"]
    assert got[cases["undelivered"][0]].channel == "provider"
    assert got[cases["program scope"][0]].messages_30d == 3  # the frequency counts every program's messages


def test_window_is_configurable_and_rebuild_applies_it(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        deals = create_program(
            conn, clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
        )
        camp = rows.campaign(conn, deals, "d", T)
        p = contacts.get_or_create(conn, parse_phone("+14155550001"), T)[0]
        rows.message(conn, program=deals, contact=p, at=T - timedelta(days=10), campaign=camp)
        _opt_out(conn, container, p, deals)
        analytics.refresh(conn, clock, window_days=7)
        assert conn.execute(select(optout_attributions.c.campaign_id)).scalar() is None
        analytics.rebuild(conn, clock, window_days=14)
        assert conn.execute(select(optout_attributions.c.campaign_id)).scalar() == camp["id"]
        report = analytics.report(conn, clock, window_days=14)
    assert report.attributed == 1 and report.campaigns[0].optouts == 1
