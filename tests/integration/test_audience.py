"""The audience on both engines: each exclusion reason, the express-written-consent rule, materialising."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, update

from optline.adapters.db.tables import campaigns as campaigns_table
from optline.adapters.db.tables import dnc_numbers, messages
from optline.adapters.db.tables import programs as programs_table
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
        outbound.subscribe(
            conn,
            clock,
            program,
            [dnc_ewc],
            Channel.IMPORT,
            {"source": "paper form", "express_written_consent": True},
        )
        outbound.opt_out(conn, clock, program, out)
        consent.record(
            conn,
            clock,
            contact_id=held,
            program=program,
            action=Action.REVIEW_HOLD,
            channel=Channel.ADMIN,
            evidence={"reason": "ambiguous reply"},
        )
        from sqlalchemy import update

        from optline.adapters.db.tables import contacts

        conn.execute(update(contacts).where(contacts.c.id == landline).values(number_type="fixed_line"))
        conn.execute(update(contacts).where(contacts.c.id == invalid).values(number_type="unknown"))
        phones = dict(conn.execute(select(contacts.c.id, contacts.c.phone)).all())
        conn.execute(
            insert(dnc_numbers),
            [
                {"phone": phones[c], "source": "national", "imported_at": clock.now()}
                for c in (dnc_import, dnc_web, dnc_ewc)
            ],
        )
        dry = audience.dry_run(conn, program["id"], {"tier": "gold"})
    assert dry.recipients == 5  # ok, dnc_web, dnc_ewc, a, b
    assert dry.excluded == {
        "opted_out": 1,
        "not_confirmed": 0,
        "no_consent_evidence": 0,
        "held": 1,
        "filtered_out": 1,
        "invalid_number": 1,
        "not_sms_capable": 1,
        "dnc_without_express_consent": 1,
    }

    with container.db.transaction() as conn:
        campaign = campaigns.create(
            conn,
            clock,
            program="deals",
            name="black friday",
            template="Hi {{ tier }} member",
            audience_filter={"tier": "gold"},
        )
        campaign, queued = campaigns.start(conn, clock, campaign, public_url=container.settings.public_url)
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
        ids = outbound.insert_contacts(
            conn,
            clock.now(),
            0,
            6,
            us_state=lambda i: ["CA", "NY", "TX"][i % 3],
            attributes=lambda i: {"score": i, "vip": i % 2 == 0},
        )
        outbound.subscribe(conn, clock, program, ids)
        assert audience.dry_run(conn, program["id"], {"us_state": ["CA", "TX"]}).recipients == 4
        assert audience.dry_run(conn, program["id"], {"vip": True}).recipients == 3
        assert audience.dry_run(conn, program["id"], {"score": 4}).recipients == 1


def _preview_and_send(container: Container, name: str, audience_filter: dict) -> tuple[audience.DryRun, int]:
    """The dry run, then the send of a campaign with that filter, each in its own transaction."""
    clock = container.clock
    with container.db.read() as conn:
        program = conn.execute(select(programs_table).where(programs_table.c.name == "deals")).one()
        dry = audience.dry_run(conn, program.id, audience_filter)
    with container.db.transaction() as conn:
        campaign = campaigns.create(
            conn,
            clock,
            program="deals",
            name=name,
            template="Hi {{ first_name }}",
            audience_filter=audience_filter,
        )
        _, queued = campaigns.start(conn, clock, campaign, public_url=container.settings.public_url)
    return dry, queued


def _seed_mixed_attributes(container: Container) -> list[int]:
    """Contacts where ``color`` is red, blue, JSON null or missing altogether; ``vip`` only on some."""
    colors: list[object] = ["red", "blue", None, "missing"]
    with container.db.transaction() as conn:
        program = outbound.make_program(conn, container.clock)

        def attrs(i: int) -> dict:
            a: dict = {"first_name": f"P{i}", "score": i % 4}
            if colors[i % 4] != "missing":
                a["color"] = colors[i % 4]
            if i % 3 == 0:
                a["vip"] = i % 2 == 0
            return a

        ids = outbound.insert_contacts(
            conn, container.clock.now(), 0, 24, attributes=attrs, us_state=lambda i: ["CA", "NY"][i % 2]
        )
        outbound.subscribe(conn, container.clock, program, ids)
        outbound.opt_out(conn, container.clock, program, ids[0])  # a red contact who left
    return ids


def test_preview_counts_what_the_send_queues_when_contacts_lack_the_field(container: Container) -> None:
    _seed_mixed_attributes(container)
    dry, queued = _preview_and_send(container, "reds", {"color": "red"})
    assert queued == 5  # 6 red contacts, one of them opted out
    assert dry.recipients == queued
    assert dry.excluded["opted_out"] == 1 and dry.excluded["filtered_out"] == 18
    assert dry.total == 24


FILTERS: list[dict] = [
    {},
    {"color": "red"},
    {"color": ["red", "blue"]},
    {"color": "green"},
    {"vip": True},
    {"vip": False},
    {"score": 2},
    {"us_state": "CA"},
    {"color": "blue", "us_state": ["CA", "NY"]},
    {"color": "red", "vip": False},
]


def test_preview_and_send_agree_for_every_filter(container: Container) -> None:
    _seed_mixed_attributes(container)
    for i, audience_filter in enumerate(FILTERS):
        dry, queued = _preview_and_send(container, f"campaign {i}", audience_filter)
        assert dry.recipients == queued, (audience_filter, dry, queued)
        assert dry.total == 24, audience_filter  # every subscription counted once, with one reason


def test_unknown_filter_key_names_the_known_keys(container: Container) -> None:
    clock = container.clock
    _seed_mixed_attributes(container)
    with pytest.raises(audience.FilterError) as refused, container.db.transaction() as conn:
        campaigns.create(
            conn, clock, program="deals", name="typo", template="Hi", audience_filter={"colour": "red"}
        )
    message = str(refused.value)
    assert "'colour'" in message
    for known in ("color", "vip", "score", "first_name", "us_state", "region", "number_type"):
        assert known in message

    # A campaign stored with a key no contact has (e.g. created before an import was undone) is refused at
    # preview and at send as well, never previewed as everyone and sent to no one.
    with container.db.transaction() as conn:
        campaign = campaigns.create(
            conn,
            clock,
            program="deals",
            name="later",
            template="Hi {{ first_name }}",
            audience_filter={"color": "red"},
        )
        conn.execute(
            update(campaigns_table)
            .where(campaigns_table.c.id == campaign["id"])
            .values(audience_filter={"colour": "red"})
        )
    with container.db.read() as conn, pytest.raises(audience.FilterError, match=r"'colour'.*color"):
        audience.dry_run(conn, campaign["program_id"], {"colour": "red"})
    with pytest.raises(audience.FilterError, match=r"'colour'.*color"), container.db.transaction() as conn:
        campaigns.start(
            conn, clock, campaigns.get_by_id(conn, campaign["id"]), public_url=container.settings.public_url
        )
    with container.db.read() as conn:
        assert conn.execute(select(messages).where(messages.c.campaign_id == campaign["id"])).first() is None
