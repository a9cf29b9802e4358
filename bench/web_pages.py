"""The pages under load, in process: the opt-out link page and the dashboard overview.

Figures: requests per second for ``GET /u/<token>`` beside ``GET /healthz`` (the same stack doing one
``SELECT 1``), and the dashboard overview's queries on the demo data beside one ``count(*)`` of messages.

The console at scale (``--search N``, default 1,000,000 contacts): the contact search by phone beside the
unique-index lookup it is built on; a name that almost nobody has (every row read) beside a ``count(*)``
of contacts (a scan too); the 1,000th keyset page beside the first; and the campaign page while a campaign
of 100,000 messages is half handed over, beside the campaigns list.
Run: ``python -m bench.web_pages [contacts] [--search N]``.
"""

from __future__ import annotations

import sys
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from bench.common import fresh_database, report
from optline.adapters.db.tables import messages
from optline.bootstrap import build
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import dashboard, demo


def _rate(client: TestClient, path: str, seconds: float = 3.0) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        assert client.get(path).status_code == 200
        n += 1
    return n / (time.perf_counter() - started)


def _per_second(fn: object, seconds: float = 3.0) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - started)


def run(engine: str, contacts: int) -> None:
    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url, public_url="http://testserver"))
        started = time.perf_counter()
        summary = demo.load(c, contacts=contacts)
        print(
            f"  [{engine}] demo: {summary.contacts:,} contacts, {summary.sent:,} messages in "
            f"{time.perf_counter() - started:.1f}s"
        )
        app = create_app(c)
        app.state.optout_limiter.limit = 10**9  # measuring the page, not the limiter
        client = TestClient(app)
        with c.db.read() as conn:
            token = conn.execute(
                select(messages.c.optout_token).where(messages.c.optout_token.is_not(None))
            ).scalar()
        report(
            f"[{engine}] GET /u/<token>",
            _rate(client, f"/u/{token}"),
            "req/s",
            "GET /healthz",
            _rate(client, "/healthz"),
        )
        now = c.clock.now()

        def overview() -> None:
            with c.db.read() as conn:
                dashboard.overview(conn, now)
                dashboard.campaigns_summary(conn, c.clock)

        def count() -> None:
            with c.db.read() as conn:
                conn.execute(select(func.count()).select_from(messages)).scalar_one()

        report(
            f"[{engine}] overview + campaigns queries",
            1e6 / _per_second(overview),
            "µs",
            "count(*) of messages",
            1e6 / _per_second(count),
        )
        c.close()


def console(engine: str, contacts: int, campaign_size: int = 100_000) -> None:
    """Contact search at ``contacts`` people and the campaign page during a send."""
    from sqlalchemy import update
    from tests.support import outbound

    from optline.adapters.db import contacts as contact_repo
    from optline.adapters.db.tables import campaigns
    from optline.adapters.db.tables import contacts as contacts_table
    from optline.services import campaign_view, contact_search
    from optline.services import campaigns as campaign_service

    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url, public_url="http://testserver"))
        started = time.perf_counter()
        with c.db.transaction() as conn:
            program = outbound.make_program(conn, c.clock)
        batch = 50_000
        for start in range(0, contacts, batch):
            with c.db.transaction() as conn:
                ids = outbound.insert_contacts(
                    conn,
                    c.clock.now(),
                    start,
                    min(batch, contacts - start),
                    attributes=lambda i: {"first_name": f"P{i}", "last_name": "Doe"},
                )
                if start < campaign_size:  # the campaign's audience
                    outbound.subscribe(conn, c.clock, program, ids[: max(0, campaign_size - start)])
        with c.db.transaction() as conn:  # one person with a rare name, near the end
            conn.execute(
                update(contacts_table)
                .where(contacts_table.c.phone == outbound.phone(contacts - 7))
                .values(attributes={"first_name": "Zelda", "last_name": "Quintanilha"})
            )
        print(f"  [{engine}] {contacts:,} contacts in {time.perf_counter() - started:.1f}s")
        if engine == "postgresql":  # what autovacuum does within a minute of a bulk load: planner statistics
            with c.db.engine.connect() as raw:  # (the expression indexes' among them)
                raw.execute(text("ANALYZE contacts"))
                raw.commit()
        phone = outbound.phone(contacts // 2)
        spelled = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"

        def search(text: str = "", after: int = 0) -> None:
            with c.db.read() as conn:
                contact_search.search(conn, contact_search.Query(text), "US", after=after)

        def lookup() -> None:
            with c.db.read() as conn:
                contact_repo.get_by_phone(conn, phone)

        def count() -> None:
            with c.db.read() as conn:
                conn.execute(select(func.count()).select_from(contacts_table)).scalar_one()

        with c.db.read() as conn:  # the id the 1,000th page starts after
            deep = conn.execute(
                select(contacts_table.c.id)
                .order_by(contacts_table.c.id)
                .offset(min(contacts - 100, 999 * contact_search.PAGE_SIZE))
                .limit(1)
            ).scalar_one()
        report(
            f"[{engine}] search '{spelled}'",
            1e6 / _per_second(lambda: search(spelled), 2),
            "µs",
            "get_by_phone (unique index)",
            1e6 / _per_second(lookup, 2),
        )
        report(
            f"[{engine}] search a rare name",
            1e6 / _per_second(lambda: search("quintanilha"), 3),
            "µs",
            f"count(*) of {contacts:,} contacts",
            1e6 / _per_second(count, 3),
        )
        report(
            f"[{engine}] keyset page 1,000",
            1e6 / _per_second(lambda: search(after=deep), 2),
            "µs",
            "page 1",
            1e6 / _per_second(search, 2),
        )

        with c.db.transaction() as conn:
            row = campaign_service.create(conn, c.clock, program="deals", name="big", template="Acme news")
            campaign_service.start(conn, c.clock, row, public_url=c.settings.public_url)
            half = select(messages.c.id).where(messages.c.campaign_id == row["id"]).limit(campaign_size // 2)
            conn.execute(
                update(messages)
                .where(messages.c.id.in_(half.scalar_subquery()))
                .values(status="delivered", sent_at=c.clock.now(), delivered_at=c.clock.now())
            )
            conn.execute(update(campaigns).where(campaigns.c.id == row["id"]).values(status="sending"))

        def campaign_page() -> None:
            with c.db.read() as conn:
                campaign_view.progress(conn, row["id"])
                campaign_view.message_page(conn, row["id"])
                dashboard.campaigns_summary(conn, c.clock)

        def campaigns_list() -> None:
            with c.db.read() as conn:
                dashboard.campaigns_summary(conn, c.clock)

        report(
            f"[{engine}] campaign page, {campaign_size:,} messages half sent",
            1e6 / _per_second(campaign_page, 3),
            "µs",
            "campaigns list queries",
            1e6 / _per_second(campaigns_list, 3),
        )
        c.close()


def main() -> None:
    args = sys.argv[1:]
    contacts = int(args[0]) if args and args[0].isdigit() else 2000
    search_size = int(args[args.index("--search") + 1]) if "--search" in args else 1_000_000
    for engine in ("sqlite", "postgresql"):
        try:
            run(engine, contacts)
            console(engine, search_size, min(100_000, search_size // 2))
        except Exception as exc:  # PostgreSQL may be absent on a laptop
            print(f"  [{engine}] skipped: {exc!r}")


if __name__ == "__main__":
    main()
