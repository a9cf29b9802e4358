"""``optline counts rebuild`` corrects counts that went wrong and says so; ``optline counts fold`` folds every
connection's rows into one per key. Both engines."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import insert, update

from optline.adapters.db import contacts, rollups
from optline.adapters.db.tables import campaign_status_counts, message_counts, message_status_counts
from optline.bootstrap import Container
from optline.domain.phones import parse_phone
from optline.services.programs import create_program
from tests.e2e.test_cli import run
from tests.integration.test_metrics_counts import counted, kept, per_campaign
from tests.support import outbox_rows as rows

T = datetime(2026, 11, 20, tzinfo=UTC)


def seed(container: Container) -> None:
    with container.db.transaction() as conn:
        program = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="p", brand="B"
        )
        camp = rows.campaign(conn, program, "c", T)
        for i, status in enumerate(["queued", "delivered", "sent", "failed", "delivered"]):
            person = contacts.get_or_create(conn, parse_phone(f"+1415555{i:04d}"), T)[0]
            rows.message(conn, program=program, contact=person, at=T, campaign=camp, status=status)


def corrections(output: str) -> dict[str, int]:
    return {t: int(n) for t, n in re.findall(r"(\w+): \d+ counts?, (\d+) corrections?", output)}


def test_rebuild_corrects_and_reports_wrong_counts(db_url: str, container: Container) -> None:
    seed(container)
    with container.db.transaction() as conn:  # counts gone wrong (a restored backup, a trigger dropped)
        conn.execute(update(message_status_counts).values(messages=message_status_counts.c.messages + 3))
        conn.execute(campaign_status_counts.delete().where(campaign_status_counts.c.status == "delivered"))
        conn.execute(update(message_counts).values(sent=0))
    rebuilt = run(db_url, "counts", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    found = corrections(rebuilt.stdout)
    assert found["message_status_counts"] > 0 and found["campaign_status_counts"] == 1, rebuilt.stdout
    assert found["message_counts"] > 0 and found["consent_event_counts"] == 0, rebuilt.stdout
    with container.db.read() as conn:
        assert kept(conn) == counted(conn)
        mine, truth = per_campaign(conn)
        assert mine == truth
    again = run(db_url, "counts", "rebuild")
    assert again.returncode == 0 and set(corrections(again.stdout).values()) == {0}, again.stdout


def test_fold_leaves_one_row_per_key(db_url: str, container: Container) -> None:
    seed(container)
    with container.db.read() as conn:
        before = rollups.kept(conn)
        keys = list(kept(conn)[0])
    with container.db.transaction() as conn:  # rows of connections long gone, that cancel out
        conn.execute(
            insert(message_status_counts),
            [
                {"status": s, "provider": p, "priority": lane, "shard": shard, "messages": n}
                for s, p, lane in keys
                for shard, n in ((7, 2), (8, -2))
            ],
        )
    folded = run(db_url, "counts", "fold")
    assert folded.returncode == 0, folded.stderr
    n = int(re.findall(r"folded (\d+) rows?", folded.stdout)[0])
    # PostgreSQL: these, and the rows the seed's own connection wrote (message_counts of past days too).
    assert n == 0 if container.db.is_sqlite else n >= 2 * len(keys), folded.stdout
    with container.db.read() as conn:
        if not container.db.is_sqlite:
            assert rollups.shard_rows(conn) == 0
        assert rollups.kept(conn) == before
