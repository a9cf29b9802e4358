"""The dashboard's read model and the users service on both engines, over the demo's data."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from optline.adapters.db.tables import consent_events, messages
from optline.bootstrap import Container
from optline.services import dashboard as read
from optline.services import demo, users


def test_demo_figures_agree_with_each_other(container: Container) -> None:
    summary = demo.load(container, contacts=300)
    now = container.clock.now()
    with container.db.transaction() as conn:
        read.refresh(conn, container.clock)
    with container.db.read() as conn:
        stats = read.overview(conn, now)
        camps = read.campaigns_summary(conn, container.clock)
        optout_events = conn.execute(
            select(func.count(func.distinct(consent_events.c.contact_id))).where(
                consent_events.c.action == "opt_out"
            )
        ).scalar_one()
        marketing = conn.execute(select(func.count()).where(messages.c.kind == "marketing")).scalar_one()
        programs = read.programs_summary(conn, now)
        queue = read.review_queue(conn)
    assert stats["contacts"] == 300 and stats["subscribers"] == 300 - optout_events
    assert stats["optouts_30d"] == optout_events == summary.optouts
    assert len(stats["trend"]) == 30 and sum(p.optouts for p in stats["trend"]) == optout_events
    assert stats["optouts_7d"] <= stats["optouts_30d"] and stats["optouts_today"] <= stats["optouts_7d"]
    # Every demo opt-out answers one campaign: a tap on its link, or a reply the inbound service attributed
    # to it — except a reply after a message that never arrived (undelivered), which is attributed to none.
    attributed = sum(c["optouts"] for c in camps)
    assert optout_events - sum(c["failed"] for c in camps) <= attributed <= optout_events
    assert sum(c["sent"] for c in camps) == marketing == summary.sent
    assert all(c["delivered"] + c["failed"] == c["sent"] for c in camps)
    latest, first = camps
    assert latest["name"].startswith("Weekend") and latest["spike"] and not first["spike"]
    assert any("above" in why for why in latest["why"])  # the analytics report says why
    assert programs[0]["subscribed"] == stats["subscribers"] and programs[0]["campaigns"] == 2
    assert len(queue) == summary.in_review and all(q["phone"] for q in queue)


def test_trend_days_are_utc_days(container: Container) -> None:
    demo.load(container, contacts=40)
    now = container.clock.now()
    with container.db.read() as conn:
        trend = read.daily_trend(conn, now, days=10)
    assert [p.day for p in trend] == [(now - timedelta(days=9 - i)).date() for i in range(10)]


def test_contact_timeline_merges_ledger_and_messages(container: Container) -> None:
    demo.load(container, contacts=40)
    with container.db.read() as conn:
        contact_id = conn.execute(
            select(consent_events.c.contact_id).where(consent_events.c.action == "opt_out").limit(1)
        ).scalar_one()
        items = read.contact_timeline(conn, contact_id)
    kinds = [i["kind"] for i in items]
    assert kinds[-1] == "consent" and "out" in kinds  # the import opt-in is the oldest; a campaign was sent
    assert any(i["kind"] == "consent" and i["row"]["action"] == "opt_out" for i in items)


def test_users_create_authenticate_and_refuse(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        users.create(conn, clock, "sam", "long-enough-pw")
        with pytest.raises(users.UserError, match="already exists"):
            users.create(conn, clock, "sam", "long-enough-pw")
        with pytest.raises(users.UserError, match="at least 10"):
            users.create(conn, clock, "kim", "short")
        assert users.authenticate(conn, clock, "sam", "wrong-password") is None
        assert users.authenticate(conn, clock, "nobody", "long-enough-pw") is None
        user = users.authenticate(conn, clock, "sam", "long-enough-pw")
        assert user is not None and user["last_login_at"] == clock.now()
        assert user["password_hash"].startswith("$argon2id$")
        with pytest.raises(users.UserError, match="not correct"):
            users.change_password(conn, user["id"], "wrong", "another-long-pw")
        users.change_password(conn, user["id"], "long-enough-pw", "another-long-pw")
        assert users.authenticate(conn, clock, "sam", "another-long-pw") is not None
        assert users.create_first_admin(conn, clock) is None  # users exist: no first-run admin
