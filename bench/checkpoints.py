"""Signed checkpoints at scale (issue 16): taking one, verifying against it, and one number's proof.

Baseline, measured in the same run on the same ledger: ``ledger.verify`` alone (what ``optline ledger verify``
did before checkpoints). ``python -m bench.checkpoints [contacts]`` (default 20,000 contacts × 2 events).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bench.common import fresh_database, report, timed
from optline.adapters.clock import FrozenClock
from optline.adapters.db import ledger
from optline.adapters.db.tables import contacts
from optline.bootstrap import build
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.services import checkpoints, proof


def _fill(container, count: int) -> None:  # type: ignore[no-untyped-def]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with container.db.transaction() as conn:
        conn.execute(
            insert(contacts),
            [
                {
                    "id": i,
                    "phone": f"+1415{2000000 + i:07d}",
                    "created_at": at,
                    "updated_at": at,
                    "number_type": "mobile",
                    "attributes": {},
                }
                for i in range(1, count + 1)
            ],
        )
        events = []
        for i in range(1, count + 1):
            first = ledger.build_event(
                contact_id=i,
                seq=1,
                prev_hash="0" * 64,
                program_id=None,
                brand="Acme",
                action=Action.OPT_IN,
                channel=Channel.SMS_KEYWORD,
                evidence={"message_text": "JOIN"},
                occurred_at=at,
                recorded_at=at,
            )
            later = at + timedelta(days=1)
            second = ledger.build_event(
                contact_id=i,
                seq=2,
                prev_hash=first["hash"],
                program_id=None,
                brand="Acme",
                action=Action.OPT_OUT,
                channel=Channel.SMS_KEYWORD,
                evidence={"message_text": "STOP"},
                occurred_at=later,
                recorded_at=later,
            )
            events += [first, second]
        for start in range(0, len(events), 5000):
            ledger.insert_events(conn, events[start : start + 5000])


def run(engine: str, count: int) -> None:
    with fresh_database(engine) as url, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            env="test",
            database_url=url,
            ledger_signing_key_file=str(Path(tmp) / "k"),
            ledger_checkpoint_log=str(Path(tmp) / "log.jsonl"),
        )
        c = build(settings, clock=FrozenClock(datetime(2026, 6, 1, tzinfo=UTC)))
        _fill(c, count)
        with c.db.read() as conn:
            plain, _ = timed(lambda: ledger.verify(conn))
        take, _ = timed(lambda: checkpoints.take(c))

        def against() -> list[object]:
            with c.db.read() as conn:
                found, _bad = checkpoints.stored(conn, checkpoints.keys.public_key_hex(settings))
                return [ledger.verify(conn), checkpoints.breaks(ledger.recomputed_digests(conn), found)]

        verify_all, _ = timed(against)

        def one() -> object:
            with c.db.read() as conn:
                found, problems, source = checkpoints.for_proof(c, conn)
                return proof.build(
                    conn,
                    "+14152000042",
                    "US",
                    now=c.clock.now(),
                    checkpoints=found,
                    checkpoint_problems=problems,
                    checkpoint_source=source,
                )

        one_proof, _ = timed(one)
        print(f"{engine}: {count:,} contacts, {2 * count:,} events")
        report("take a checkpoint (digest + sign + log)", take * 1000, "ms", "ledger verify", plain * 1000)
        report(
            "verify + check against the checkpoints", verify_all * 1000, "ms", "ledger verify", plain * 1000
        )
        report(
            "one number's proof (incl. digest chain)", one_proof * 1000, "ms", "ledger verify", plain * 1000
        )
        c.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20_000
    for engine in ("sqlite", "postgresql"):
        run(engine, count)


if __name__ == "__main__":
    main()
