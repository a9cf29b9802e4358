"""Retention purges on both engines (services/retention.py): pending receipts that matched nothing and the
rejected rows of old imports go; opt-out receipts whose opt-out could not be recorded, the ledger, messages
and the imports' own records stay."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, insert, select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import ledger
from optline.adapters.db.tables import consent_events, import_rejects, imports, pending_receipts
from optline.adapters.providers.base import StatusUpdate
from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints import worker
from optline.services import receipts, retention
from tests.support import web

PERSON = "+14155550134"


def receipt(container: Container, sid: str, *, opted_out: bool = False, recipient: str | None = None) -> None:
    update_ = StatusUpdate("twilio", sid, "undelivered", opted_out=opted_out, recipient=recipient)
    with container.db.transaction() as conn:
        assert receipts.record_status(conn, container.clock, update_).message_id is None  # kept: no match


def kept(container: Container) -> dict[str, Any]:
    with container.db.read() as conn:
        rows = conn.execute(select(pending_receipts)).all()
    return {r.provider_message_id: r for r in rows}


def count(container: Container, table: Any) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_pending_receipts_that_matched_nothing_go_after_the_retention(
    container: Container, clock: FrozenClock
) -> None:
    program = web.program(container, optout_scope="program")
    web.subscriber(container, program, PERSON)
    receipt(container, "SM-old")
    receipt(container, "SM-old-optout", opted_out=True, recipient=PERSON)  # recorded in the ledger on arrival
    receipt(container, "SM-old-unrecorded", opted_out=True, recipient="not a number")  # could not be
    assert kept(container)["SM-old-optout"].consent_event_id is not None
    assert kept(container)["SM-old-unrecorded"].consent_event_id is None
    clock.advance(days=6)
    receipt(container, "SM-recent")
    events = count(container, consent_events)

    clock.advance(days=1, seconds=1)  # the first three are 7 days old, the last one a day
    assert retention.purge_pending_receipts(container.db, clock, 7, batch=1) == 2
    assert set(kept(container)) == {"SM-old-unrecorded", "SM-recent"}
    assert count(container, consent_events) == events  # the opt-out's evidence is in the ledger, untouched
    with container.db.read() as conn:
        assert ledger.verify(conn).ok
    assert retention.purge_pending_receipts(container.db, clock, 0) == 0  # 0: kept for ever
    clock.advance(days=365)
    assert retention.purge_pending_receipts(container.db, clock, 7) == 1
    assert set(kept(container)) == {"SM-old-unrecorded"}  # the only trace of that STOP: never purged


def add_import(container: Container, program_id: int, rejects: int, *, ended_days_ago: float | None) -> int:
    now = container.clock.now()
    started = now - timedelta(days=ended_days_ago if ended_days_ago is not None else 100, minutes=5)
    with container.db.transaction() as conn:
        import_id = int(
            conn.execute(
                insert(imports)
                .values(
                    program_id=program_id,
                    file_name="c.csv",
                    source="cli",
                    imported_by="ops",
                    started_at=started,
                    finished_at=None if ended_days_ago is None else now - timedelta(days=ended_days_ago),
                    status="running" if ended_days_ago is None else "done",
                    columns=["phone"],
                    counts={"rows": rejects, "rejected": rejects},
                    reject_reasons={"invalid phone number": rejects},
                    held_reasons={},
                )
                .returning(imports.c.id)
            ).scalar_one()
        )
        if rejects:
            conn.execute(
                insert(import_rejects),
                [
                    {
                        "import_id": import_id,
                        "line": n + 2,
                        "reason": "invalid phone number",
                        "held": False,
                        "fields": [f"555-{n}"],
                    }
                    for n in range(rejects)
                ],
            )
    return import_id


def test_import_rejects_of_old_imports_go_in_batches_and_the_import_record_stays(
    container: Container, clock: FrozenClock
) -> None:
    program = web.program(container)
    old = add_import(container, program["id"], 12, ended_days_ago=91)
    died = add_import(container, program["id"], 2, ended_days_ago=None)  # its process died 100 days ago
    recent = add_import(container, program["id"], 3, ended_days_ago=89)
    clean = add_import(container, program["id"], 0, ended_days_ago=200)

    assert retention.purge_import_rejects(container.db, clock, 0) == (0, 0)  # 0: kept for ever
    assert retention.purge_import_rejects(container.db, clock, 90, batch=5) == (14, 2)
    with container.db.read() as conn:
        left = conn.execute(
            select(import_rejects.c.import_id, func.count()).group_by(import_rejects.c.import_id)
        )
        assert dict(left.all()) == {recent: 3}
        records = {r.id: r for r in conn.execute(select(imports))}
    assert records[old].rejects_purged_at == records[died].rejects_purged_at is not None
    assert records[recent].rejects_purged_at is None and records[clean].rejects_purged_at is None
    assert records[old].counts == {"rows": 12, "rejected": 12}  # the accounting stays
    assert records[old].reject_reasons == {"invalid phone number": 12}
    assert retention.purge_import_rejects(container.db, clock, 90) == (0, 0)  # nothing left to do


def test_the_worker_purges_with_the_settings_and_counts_in_the_log(
    container: Container, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    program = web.program(container)
    add_import(container, program["id"], 4, ended_days_ago=0)
    receipt(container, "SM-1")
    receipt(container, "SM-2")
    clock.advance(days=container.settings.import_rejects_retention_days + 1)
    with caplog.at_level(logging.INFO, logger="optline.retention"):
        worker.purge_expired(container)
    assert "deleted 2 pending receipt(s) that matched no message for 7 days" in caplog.text
    assert "deleted 4 rejected row(s) of 1 import(s) that ended more than 90 days ago" in caplog.text
    assert count(container, pending_receipts) == count(container, import_rejects) == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="optline.retention"):
        worker.purge_expired(container)
    assert caplog.text == ""  # nothing deleted: nothing logged


@pytest.mark.parametrize("name", ["pending_receipts_retention_days", "import_rejects_retention_days"])
def test_retention_settings_are_0_or_at_least_a_day(name: str) -> None:
    assert getattr(Settings(env="test", **{name: 0}), name) == 0
    with pytest.raises(ValidationError, match=f"OPTLINE_{name.upper()} must be 0"):
        Settings(env="test", **{name: 0.5})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Settings(env="test", **{name: -1})
