"""Sign-ups: the keyword double opt-in (JOIN, then YES) per second, and expiring unconfirmed sign-ups.

Baselines, measured in the same run on the same database:
- flow: a plain single opt-in (one ``consent.record`` per contact, one transaction each). The double opt-in
  is two transactions per person, each with a ledger event, an outbox row and the sign-up bookkeeping
  (the ratio is below 1: it is the price of the second step, paid once per person).
- expiry: closing the same number of sign-ups one UPDATE per row (what a naive worker loop would do).
Run: ``python -m bench.signup_flow [CONTACTS] [EXPIRING]``.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from sqlalchemy import insert, update

from bench.common import fresh_database, report, timed
from optline.adapters.clock import FrozenClock, SystemClock
from optline.adapters.db.tables import contacts, signups
from optline.bootstrap import build
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.services import consent, signup
from optline.services.programs import create_program


def _contacts(conn, n: int, offset: int, now) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = [
        {
            "phone": f"+1415{offset + i:07d}",
            "number_type": "mobile",
            "attributes": {},
            "created_at": now,
            "updated_at": now,
            "time_zone_overridden": False,
        }
        for i in range(n)
    ]
    return [dict(r._mapping) for r in conn.execute(insert(contacts).returning(*contacts.c), rows)]


def run(engine: str, n: int, expiring: int) -> None:
    with fresh_database(engine) as url:
        c = build(Settings(env="test", database_url=url), clock=SystemClock())
        with c.db.transaction() as conn:
            program = create_program(
                conn,
                c.clock,
                help_contact="https://acme.example/help",
                name="deals",
                brand="Acme",
                double_opt_in=True,
                join_keywords=["JOIN"],
                sender_numbers=["+14155550100"],
            )
            plain = create_program(
                conn, c.clock, help_contact="https://acme.example/help", name="plain", brand="Plain"
            )
            people = _contacts(conn, n, 0, c.clock.now())
            others = _contacts(conn, n, n, c.clock.now())

        def single() -> None:
            for person in others:
                with c.db.transaction() as conn:
                    consent.record(
                        conn,
                        c.clock,
                        contact_id=person["id"],
                        program=plain,
                        action=Action.OPT_IN,
                        channel=Channel.API,
                        evidence={"source": "bench", "disclosure_text": "x"},
                    )

        def double() -> None:
            for i, person in enumerate(people):
                for text in ("JOIN", "YES"):
                    with c.db.transaction() as conn:
                        assert signup.handle_inbound(
                            conn,
                            c.clock,
                            program=program,
                            contact=person,
                            text=text,
                            evidence={"provider_message_id": f"{text}{i}"},
                        )

        base, _ = timed(single)
        took, _ = timed(double)
        report(f"{engine}: JOIN + YES double opt-ins", n / took, "/s", "single opt-in", n / base)

        # Expiry: `expiring` pending sign-ups whose window has passed.
        clock = FrozenClock(c.clock.now())
        with c.db.transaction() as conn:
            version = signup.current_disclosure(conn, clock, program)
            pending = _contacts(conn, expiring, 2 * n, clock.now())
            rows = [
                {
                    "contact_id": p["id"],
                    "program_id": program["id"],
                    "channel": "web",
                    "status": "pending",
                    "disclosure_version_id": version["id"],
                    "evidence": {},
                    "started_at": clock.now(),
                    "expires_at": clock.now() + timedelta(hours=24),
                }
                for p in pending
            ]
            conn.execute(insert(signups), rows)
        clock.advance(hours=25)
        half = [p["id"] for p in pending[: expiring // 2]]

        def naive() -> None:  # the baseline on the first half: one UPDATE per row, one transaction
            with c.db.transaction() as conn:
                for cid in half:
                    conn.execute(
                        update(signups)
                        .where((signups.c.contact_id == cid) & (signups.c.status == "pending"))
                        .values(status="expired", expired_at=clock.now())
                    )

        def batched() -> int:
            total = 0
            while True:
                with c.db.transaction() as conn:
                    done = signup.expire_due(conn, clock, limit=1000)
                total += done
                if done < 1000:
                    return total

        base, _ = timed(naive)
        took, expired = timed(batched)
        assert expired == expiring - len(half), expired
        report(f"{engine}: sign-ups expired", expired / took, "/s", "row at a time", len(half) / base)
        c.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    expiring = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    for engine in ("sqlite", "postgresql"):
        run(engine, n, expiring)


if __name__ == "__main__":
    main()
