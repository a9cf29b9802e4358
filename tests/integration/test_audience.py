"""The audience on both engines: each exclusion reason, the express-written-consent rule, materialising."""

from __future__ import annotations

from sqlalchemy import insert, select

from optline.adapters.db.tables import dnc_numbers, messages
from optline.bootstrap import Container
from optline.domain.consent import Action, Channel
from optline.services import audience, campaigns, consent
from tests.support import outbound

WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/join",
}


def test_exclusion_reasons_and_materialise(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, clock)
        ids = outbound.insert_contacts(
            conn, clock.now(), 0, 12, attributes=lambda i: {"tier": "gold" if i != 8 else "basic"}
        )
        ok, out, held, landline, invalid, dnc_import, dnc_web, dnc_ewc, filtered, _never, a, b = ids
        outbound.subscribe(
            conn, clock, program, [ok, out, held, landline, invalid, dnc_import, filtered, a, b]
        )
        outbound.subscribe(conn, clock, program, [dnc_web], Channel.WEB, WEB)
        outbound.subscribe(conn, clock, program, [dnc_ewc], Channel.IMPORT,
                           {"source": "paper form", "express_written_consent": True})  # fmt: skip
        outbound.opt_out(conn, clock, program, out)
        consent.record(conn, clock, contact_id=held, program=program, action=Action.REVIEW_HOLD,
                       channel=Channel.ADMIN, evidence={"reason": "ambiguous reply"})  # fmt: skip
        from sqlalchemy import update

        from optline.adapters.db.tables import contacts

        conn.execute(update(contacts).where(contacts.c.id == landline).values(number_type="fixed_line"))
        conn.execute(update(contacts).where(contacts.c.id == invalid).values(number_type="unknown"))
        phones = dict(conn.execute(select(contacts.c.id, contacts.c.phone)).all())
        conn.execute(insert(dnc_numbers), [{"phone": phones[c], "source": "national", "imported_at": clock.now()}
                                           for c in (dnc_import, dnc_web, dnc_ewc)])  # fmt: skip
        dry = audience.dry_run(conn, program["id"], {"tier": "gold"})
    assert dry.recipients == 5  # ok, dnc_web, dnc_ewc, a, b
    assert dry.excluded == {"opted_out": 1, "not_confirmed": 0, "no_consent_evidence": 0, "held": 1,
                            "filtered_out": 1, "invalid_number": 1, "not_sms_capable": 1,
                            "dnc_without_express_consent": 1}  # fmt: skip

    with container.db.transaction() as conn:
        campaign = campaigns.create(conn, clock, program="deals", name="black friday", template="Hi {{ tier }} member",
                                    audience_filter={"tier": "gold"})  # fmt: skip
        campaign, queued = campaigns.start(conn, clock, campaign)
    assert queued == 5 and campaign["status"] == "sending"
    with container.db.read() as conn:
        rows = conn.execute(select(messages).where(messages.c.campaign_id == campaign["id"])).all()
    assert sorted(r.contact_id for r in rows) == sorted([ok, dnc_web, dnc_ewc, a, b])
    assert all(r.optout_token is None for r in rows)  # made at hand-over, by dispatch
    assert {r.idempotency_key for r in rows} == {f"c{campaign['id']}:{r.contact_id}" for r in rows}
    assert all(r.status == "queued" and r.segments == 0 and r.consent_event_id for r in rows)


def test_filters_on_columns_and_lists(container: Container) -> None:
    clock = container.clock
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, clock)
        ids = outbound.insert_contacts(conn, clock.now(), 0, 6, us_state=lambda i: ["CA", "NY", "TX"][i % 3],
                                       attributes=lambda i: {"score": i, "vip": i % 2 == 0})  # fmt: skip
        outbound.subscribe(conn, clock, program, ids)
        assert audience.dry_run(conn, program["id"], {"us_state": ["CA", "TX"]}).recipients == 4
        assert audience.dry_run(conn, program["id"], {"vip": True}).recipients == 3
        assert audience.dry_run(conn, program["id"], {"score": 4}).recipients == 1
