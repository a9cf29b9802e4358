"""Audience build: 1,000,000 subscribed contacts, 100,000 of them opted out, on SQLite and PostgreSQL.

Measures the set-based dry run (count per exclusion reason) and materialisation (one INSERT … SELECT into
the outbox) in recipients per second, beside a per-recipient check baseline measured in the same run: the
row-by-row way (for each subscriber: read its consent through ``consent.current``, its contact, the DNC
list, then insert its message), timed on a sample and reported as a rate.

    python -m bench.audience [--contacts 1000000] [--opted-out 100000] [--engines sqlite,postgresql]

Targets: ≥ 300,000 recipients/s and ≥ 50× the baseline.

Seeding 1,000,000 contacts through the consent service takes many minutes on PostgreSQL; ``--keep`` leaves
the seeded database in place (its URL is printed) and ``--reuse URL`` measures on it again (outbox rows
from earlier runs are removed first). The baselines run first, on the same state as the set-based build
(their inserts are rolled back). Measured right after the bulk insert of the outbox, before autovacuum had
analysed it, PostgreSQL's per-row inserts took 10-100 ms instead of about 1 ms, which flattered the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from tests.support import outbound

from optline.adapters.clock import SystemClock
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import contacts, dnc_numbers, messages, subscriptions
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.domain.optout_links import new_token
from optline.domain.phones import SMS_CAPABLE
from optline.services import audience, campaigns, consent

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
BASELINE_SAMPLE = 20_000


def seed(c: Container, total: int, opted_out: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    program, ids = outbound.seed(c, total, batch=50_000, attributes=lambda i: {"first_name": f"P{i}"})
    step = max(1, total // opted_out)
    outs = ids[::step][:opted_out]
    for i in range(0, len(outs), 10_000):
        with c.db.transaction() as conn:
            for cid in outs[i : i + 10_000]:
                outbound.opt_out(conn, c.clock, program, cid)
    with c.db.transaction() as conn:  # a small DNC list: half of it covered by express written consent
        phones = [outbound.phone(i) for i in range(5, total, total // 1000)]
        conn.execute(
            insert(dnc_numbers),
            [{"phone": p, "source": "bench", "imported_at": c.clock.now()} for p in phones],
        )
    if c.db.engine.dialect.name == "postgresql":
        with c.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    print(f"  seeded {total:,} contacts ({len(outs):,} opted out) in {time.perf_counter() - t0:.0f}s")
    return program


def baseline(
    c: Container, program: dict[str, Any], campaign_id: int, sample_size: int, insert_rows: bool
) -> float:
    """Per-recipient checks (and inserts), one subscriber at a time: recipients/s on a sample."""
    with c.db.read() as conn:
        sample = [
            r[0]
            for r in conn.execute(
                select(subscriptions.c.contact_id)
                .where(subscriptions.c.program_id == program["id"])
                .limit(sample_size)
            )
        ]
    t0 = time.perf_counter()
    with c.db.transaction() as conn:
        for cid in sample:
            status, held = consent.current(conn, cid, program)
            row = conn.execute(
                select(subscriptions.c.consent_event_id).where(
                    subscriptions.c.contact_id == cid, subscriptions.c.program_id == program["id"]
                )
            ).first()
            person = conn.execute(select(contacts).where(contacts.c.id == cid)).one()
            on_dnc = conn.execute(
                select(dnc_numbers.c.phone).where(dnc_numbers.c.phone == person.phone)
            ).first()
            if status.value != "subscribed" or held or not row or not row.consent_event_id:
                continue
            if person.number_type not in SMS_CAPABLE or on_dnc or not insert_rows:
                continue
            now = c.clock.now()
            conn.execute(
                insert(messages).values(
                    campaign_id=campaign_id,
                    program_id=program["id"],
                    contact_id=cid,
                    kind="marketing",
                    to_phone=person.phone,
                    body="x",
                    segments=0,
                    status="queued",
                    idempotency_key=f"b{campaign_id}:{cid}",
                    optout_token=new_token(),
                    consent_event_id=row.consent_event_id,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        conn.rollback()
    return len(sample) / (time.perf_counter() - t0)


def clear_outbox(c: Container) -> None:
    """A reused database: forget the outbox rows of earlier runs (campaign counters follow by trigger)."""
    with c.db.transaction() as conn:
        conn.execute(text("DELETE FROM messages WHERE status = 'queued'"))
    if c.db.engine.dialect.name == "postgresql":
        with c.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE messages"))


def run_engine(
    url: str, total: int, opted_out: int, sample: int = BASELINE_SAMPLE, reuse: bool = False
) -> list[str]:
    c = build(Settings(env="test", database_url=url), clock=SystemClock(), migrate_db=True)
    name = c.db.engine.dialect.name
    print(f"{name}:", flush=True)
    if reuse:
        with c.db.read() as conn:
            found = program_repo.get_by_name(conn, "deals")
        assert found is not None, "--reuse needs a database seeded by this benchmark (--keep)"
        program = found
        clear_outbox(c)
    else:
        program = seed(c, total, opted_out)
    run = uuid.uuid4().hex[:6]
    with c.db.transaction() as conn:
        camp = campaigns.create(
            conn, c.clock, program="deals", name=f"bench-{run}", template="Hi {{ first_name }}"
        )
        base_camp = campaigns.create(conn, c.clock, program="deals", name=f"baseline-{run}", template="x")
    lines: list[str] = []

    def say(line: str) -> None:
        print("  " + line, flush=True)
        lines.append(line)

    check_only = baseline(c, program, base_camp["id"], sample, insert_rows=False)
    base = baseline(c, program, base_camp["id"], sample, insert_rows=True)
    say(
        f"{name:10s} baseline on {sample:,} subscribers, one at a time: check only {check_only:,.0f} recipients/s; "
        f"check + insert {base:,.0f} recipients/s"
    )
    t0 = time.perf_counter()
    with c.db.read() as conn:
        dry = audience.dry_run(conn, program["id"], {})
    t_dry = time.perf_counter() - t0
    dry_rate = dry.total / t_dry
    say(
        f"{name:10s} audience build (set-based dry run, {dry.total:,} subscribers, {sum(dry.excluded.values()):,} "
        f"excluded): {t_dry:.2f}s = {dry_rate:,.0f} recipients/s = {dry_rate / check_only:,.0f}x the per-recipient "
        f"check (targets: >= 300,000/s, >= 50x)"
    )
    t0 = time.perf_counter()
    with c.db.transaction() as conn:
        queued = audience.materialise(conn, camp, program, c.clock.now())
    t_mat = time.perf_counter() - t0
    mat_rate = queued / t_mat
    say(
        f"{name:10s} materialise {queued:,} outbox rows (INSERT … SELECT): {t_mat:.2f}s = {mat_rate:,.0f} "
        f"recipients/s = {mat_rate / base:,.0f}x per-recipient check + insert"
    )
    c.close()
    assert queued == dry.recipients, (queued, dry.recipients)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="audience build benchmark")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--opted-out", type=int, default=100_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--baseline-sample", type=int, default=BASELINE_SAMPLE)
    parser.add_argument("--keep", action="store_true", help="keep the seeded PostgreSQL database")
    parser.add_argument("--reuse", metavar="URL", help="measure on a database kept by an earlier --keep run")
    args, _ = parser.parse_known_args()
    results: list[str] = []
    if args.reuse:
        results += run_engine(args.reuse, args.contacts, args.opted_out, args.baseline_sample, reuse=True)
    for engine in [] if args.reuse else args.engines.split(","):
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results += run_engine(
                    f"sqlite:///{Path(tmp) / 'bench.db'}", args.contacts, args.opted_out, args.baseline_sample
                )
            continue
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        db = f"optline_bench_{uuid.uuid4().hex[:8]}"
        url = make_url(PG_URL).set(database=db).render_as_string(False)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db}"'))
        try:
            results += run_engine(url, args.contacts, args.opted_out, args.baseline_sample)
        finally:
            if args.keep:
                print(f"  kept: python -m bench.audience --reuse {url}")
            else:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            admin.dispose()
    print("\n".join(["", "audience summary:", *results]))


if __name__ == "__main__":
    main()
