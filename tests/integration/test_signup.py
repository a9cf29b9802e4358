"""Sign-ups and the double opt-in on both engines: keyword join, confirmation, expiry, rejoin, versions."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts, ledger
from optline.adapters.db import signups as signup_repo
from optline.adapters.db.tables import consent_events, messages, subscriptions
from optline.bootstrap import Container
from optline.domain import segments
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import parse_phone
from optline.services import consent, signup
from optline.services.programs import create_program

PHONE = "+14155550134"
SENDER = "+14155550100"


def inbound(text: str, n: int = 1) -> dict[str, Any]:
    return {"provider": "simulator", "provider_message_id": f"SM{n}", "from_phone": PHONE, "to_phone": SENDER}


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        program = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=[SENDER],
            double_opt_in=True,
            join_keywords=["join", "DEALS"],
            frequency_text="Up to 4 msgs/month",
            terms_url="https://acme.example/terms",
            privacy_url="https://acme.example/privacy",
        )
        contact, _ = contacts.get_or_create(conn, parse_phone(PHONE), container.clock.now())
    return {"program": program, "contact": contact}


def reply(container: Container, world: dict[str, Any], text: str, n: int = 1) -> bool:
    with container.db.transaction() as conn:
        return signup.handle_inbound(
            conn,
            container.clock,
            program=world["program"],
            contact=world["contact"],
            text=text,
            evidence=inbound(text, n),
        )


def state(container: Container, world: dict[str, Any]) -> Status:
    with container.db.read() as conn:
        return consent.current(conn, world["contact"]["id"], world["program"])[0]


def outbox(container: Container) -> list[dict[str, Any]]:
    with container.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(messages).order_by(messages.c.id))]


def events(container: Container, world: dict[str, Any]) -> list[dict[str, Any]]:
    with container.db.read() as conn:
        return ledger.history(conn, world["contact"]["id"])


def test_keyword_join_then_yes_subscribes_with_both_messages_as_evidence(
    container: Container, world: dict[str, Any]
) -> None:
    assert reply(container, world, "Join!", 1) is True
    assert state(container, world) is Status.PENDING
    [prompt] = outbox(container)
    assert prompt["kind"] == "signup" and prompt["to_phone"] == PHONE and prompt["from_phone"] == SENDER
    # CTIA's opt-in confirmation elements, each once, within two segments (the full disclosure stays in the
    # evidence by version).
    for element in (
        "Acme Coffee",
        "Reply Y to confirm",
        "STOP to cancel",
        "Msg & data rates may apply",
        "Up to 4 msgs/month",
        "not a condition of purchase",
        "https://acme.example/terms",
        "HELP",
    ):
        assert prompt["body"].count(element) == 1, prompt["body"]
    assert segments.count(prompt["body"]).segments <= 2

    assert reply(container, world, "sí", 2) is True
    assert state(container, world) is Status.SUBSCRIBED
    first, confirmed = events(container, world)
    assert (first["action"], first["channel"]) == ("opt_in", "sms_keyword")
    assert first["evidence"]["message_text"] == "Join!" and first["evidence"]["keyword"] == "JOIN"
    assert (confirmed["action"], confirmed["channel"]) == ("opt_in_confirmed", "sms_keyword")
    proof = confirmed["evidence"]
    assert proof["message_text"] == "sí" and proof["provider_message_id"] == "SM2"
    assert proof["prompt"]["body"] == prompt["body"] and proof["prompt"]["id"] == prompt["id"]
    assert proof["first_step"]["event_id"] == first["id"]
    assert proof["first_step"]["evidence"]["message_text"] == "Join!"
    assert proof["disclosure_version_id"] == first["evidence"]["disclosure_version_id"]
    with container.db.read() as conn:
        sub = conn.execute(select(subscriptions)).one()
        assert sub.consent_event_id == confirmed["id"]  # sending rests on the confirmation
        assert ledger.verify(conn).ok
    welcome = outbox(container)[-1]
    assert welcome["kind"] == "confirmation" and "subscribed" in welcome["body"]


def test_unconfirmed_signup_expires_and_is_never_sendable(
    container: Container, world: dict[str, Any], clock: FrozenClock
) -> None:
    reply(container, world, "DEALS")
    clock.advance(hours=24, seconds=1)
    with container.db.transaction() as conn:
        assert signup.expire_due(conn, clock) == 1
        assert signup.expire_due(conn, clock) == 0
    sent_before = len(outbox(container))
    assert state(container, world) is Status.PENDING  # never subscribed: pending is not sendable
    with container.db.read() as conn:
        sub = conn.execute(select(subscriptions)).one()
        assert sub.consent_event_id is None  # no consent evidence, so no marketing can rest on it
        [row] = signup_repo.listing(conn)
        assert row["status"] == "expired" and row["expired_at"] is not None
    assert len(outbox(container)) == sent_before  # expiry sends nothing
    # A late yes is answered (once) and changes nothing.
    assert reply(container, world, "YES", 2) is True
    assert state(container, world) is Status.PENDING
    assert [e["action"] for e in events(container, world)] == ["opt_in"]
    assert "expired" in outbox(container)[-1]["body"]


def test_yes_after_window_but_before_the_worker_ran_does_not_confirm(
    container: Container, world: dict[str, Any], clock: FrozenClock
) -> None:
    with container.db.transaction() as conn:
        world["program"] = signup.set_window(conn, world["program"], 2)
    reply(container, world, "join")
    clock.advance(hours=2, seconds=1)
    assert reply(container, world, "Y", 2) is True
    assert state(container, world) is Status.PENDING
    assert [e["action"] for e in events(container, world)] == ["opt_in"]


def test_yes_without_pending_signup_changes_nothing(container: Container, world: dict[str, Any]) -> None:
    assert reply(container, world, "YES") is False
    assert state(container, world) is Status.NEVER
    assert events(container, world) == [] and outbox(container) == []
    # Nor does an unrelated reply or a question confirm a pending sign-up.
    reply(container, world, "JOIN", 2)
    assert reply(container, world, "yes?", 3) is False
    assert reply(container, world, "what is this", 4) is False
    assert state(container, world) is Status.PENDING


def test_opted_out_person_rejoins_only_explicitly(container: Container, world: dict[str, Any]) -> None:
    cid = world["contact"]["id"]
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["program"],
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    assert reply(container, world, "YES", 1) is False  # no sign-up pending: not a rejoin
    assert state(container, world) is Status.UNSUBSCRIBED
    assert reply(container, world, "JOIN", 2) is True  # the explicit path: keyword, then the yes
    assert state(container, world) is Status.PENDING
    # While pending, an import cannot complete the sign-up (it could hide the earlier opt-out).
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=cid,
            program=world["program"],
            action=Action.OPT_IN,
            channel=Channel.IMPORT,
            evidence={"source": "crm.csv"},
        )
    assert state(container, world) is Status.PENDING
    assert reply(container, world, "oui", 3) is True
    assert state(container, world) is Status.SUBSCRIBED


def test_stop_while_pending_cancels_the_signup(container: Container, world: dict[str, Any]) -> None:
    reply(container, world, "JOIN", 1)
    with container.db.transaction() as conn:
        consent.record(
            conn,
            container.clock,
            contact_id=world["contact"]["id"],
            program=world["program"],
            action=Action.OPT_OUT,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "STOP"},
        )
    assert reply(container, world, "YES", 2) is False
    assert state(container, world) is Status.UNSUBSCRIBED
    with container.db.read() as conn:
        assert signup_repo.listing(conn)[0]["status"] == "cancelled"


def test_each_opt_in_points_at_the_version_shown_and_changes_make_versions(
    container: Container, world: dict[str, Any]
) -> None:
    program = world["program"]
    with container.db.transaction() as conn:
        v1 = signup.current_disclosure(conn, container.clock, program)
        assert signup.current_disclosure(conn, container.clock, program)["id"] == v1["id"]  # stable
    reply(container, world, "JOIN", 1)
    text = (
        "Acme Coffee deals: up to 4 msgs/month, recurring automated marketing texts. Msg & data rates may "
        "apply. Reply HELP for help, STOP to cancel. Consent is not a condition of purchase. "
        "Terms https://acme.example/terms Privacy https://acme.example/privacy"
    )
    with container.db.transaction() as conn:
        v2, created = signup.set_disclosure(conn, container.clock, program, text)
        assert created and v2["version"] == v1["version"] + 1 and v2["custom"]
        assert signup.set_disclosure(conn, container.clock, program, text) == (v2, False)  # unchanged
        with pytest.raises(signup.SignupError, match="Msg & data rates may apply"):
            signup.set_disclosure(conn, container.clock, program, "Acme Coffee deals. Reply STOP to stop.")
        other, _ = contacts.get_or_create(conn, parse_phone("+14155550199"), container.clock.now())
        signup.start(
            conn,
            container.clock,
            program=program,
            contact=other,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "JOIN"},
        )
        assert [v["version"] for v in signup_repo.disclosures_of(conn, program["id"])] == [1, 2]
        first = conn.execute(
            select(consent_events.c.evidence).where(consent_events.c.contact_id == world["contact"]["id"])
        ).scalar_one()
        second = conn.execute(
            select(consent_events.c.evidence).where(consent_events.c.contact_id == other["id"])
        ).scalar_one()
    assert first["disclosure_version_id"] == v1["id"] and first["disclosure_text"] == v1["text"]
    assert second["disclosure_version_id"] == v2["id"] and second["disclosure_text"] == text
    # A program whose disclosure is the composed default gets a new version when its settings change.
    with container.db.transaction() as conn:
        news = create_program(
            conn, container.clock, help_contact="https://acme.example/help", name="news", brand="Acme Coffee"
        )
        d1 = signup.current_disclosure(conn, container.clock, news)
        d2 = signup.current_disclosure(conn, container.clock, {**news, "frequency_text": "2 msgs/week"})
    assert d2["version"] == d1["version"] + 1 and "2 msgs/week" in d2["text"]


def test_web_signup_is_double_opt_in_and_does_not_resend_while_pending(
    container: Container, world: dict[str, Any]
) -> None:
    single = {**world["program"], "double_opt_in": False}  # even a single opt-in program confirms by SMS
    web = {"ip": "203.0.113.7", "user_agent": "UA", "source_url": "http://testserver/join/deals"}
    with container.db.transaction() as conn:
        first = signup.start_for_phone(
            conn,
            container.clock,
            program=single,
            phone="(415) 555-0134",
            region="US",
            channel=Channel.WEB,
            evidence=web,
            client_ip="203.0.113.7",
        )
        again = signup.start_for_phone(
            conn,
            container.clock,
            program=single,
            phone="415.555.0134",
            region="US",
            channel=Channel.WEB,
            evidence=web,
            client_ip="203.0.113.7",
        )
        assert signup_repo.started_from_ip(conn, "203.0.113.7", container.clock.now()) == 1
    assert (first.outcome, again.outcome) == ("pending", "already_pending")
    assert len(outbox(container)) == 1  # one prompt per window, however often the form is sent
    [event] = events(container, world)
    assert event["channel"] == "web" and event["evidence"]["ip"] == "203.0.113.7"
    assert event["evidence"]["disclosure_text"] == first.signup["evidence"]["disclosure_text"]


def test_single_opt_in_keyword_subscribes_at_once(container: Container, world: dict[str, Any]) -> None:
    world["program"] = {**world["program"], "double_opt_in": False}
    assert reply(container, world, "JOIN") is True
    assert state(container, world) is Status.SUBSCRIBED
    [message] = outbox(container)
    assert message["kind"] == "confirmation" and "Msg & data rates may apply" in message["body"]
    assert reply(container, world, "JOIN", 2) is True  # again: "already subscribed", nothing recorded
    assert len(events(container, world)) == 1
    assert "already subscribed" in outbox(container)[-1]["body"]


def test_api_signup_needs_evidence(container: Container, world: dict[str, Any]) -> None:
    with container.db.transaction() as conn, pytest.raises(signup.ConsentRefused, match="disclosure_text"):
        signup.start(
            conn,
            container.clock,
            program=world["program"],
            contact=world["contact"],
            channel=Channel.API,
            evidence={"source": "kiosk"},
        )
    assert state(container, world) is Status.NEVER and outbox(container) == []


def test_join_from_an_unknown_number_creates_the_contact(container: Container, world: dict[str, Any]) -> None:
    evidence = {"provider": "simulator", "provider_message_id": "SM9", "from_phone": "+14155550177",
                "to_phone": SENDER}  # fmt: skip
    with container.db.transaction() as conn:
        assert signup.handle_inbound(
            conn, container.clock, program=world["program"], contact=None, text="JOIN", evidence=evidence
        )
        assert not signup.handle_inbound(
            conn,
            container.clock,
            program=world["program"],
            contact=None,
            text="hello",
            evidence={**evidence, "from_phone": "+14155550178"},
        )
        assert not signup.handle_inbound(
            conn, container.clock, program=None, contact=None, text="JOIN", evidence=evidence
        )
        contact = contacts.get_by_phone(conn, "+14155550177")
        assert contact is not None and contacts.get_by_phone(conn, "+14155550178") is None
        assert consent.current(conn, contact["id"], world["program"])[0] is Status.PENDING


def test_concurrent_first_views_create_one_disclosure_version(
    container: Container, world: dict[str, Any]
) -> None:
    import threading

    barrier = threading.Barrier(4)
    seen: list[int] = []
    errors: list[BaseException] = []

    def view() -> None:
        try:
            barrier.wait()
            with container.db.transaction() as conn:
                seen.append(signup.current_disclosure(conn, container.clock, world["program"])["id"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=view) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(seen)) == 1
    with container.db.read() as conn:
        assert len(signup_repo.disclosures_of(conn, world["program"]["id"])) == 1


def test_double_opt_in_hook_starts_a_keyword_signup(container: Container, world: dict[str, Any]) -> None:
    with container.db.transaction() as conn:
        event_id = signup.double_opt_in_hook(
            conn,
            container.clock,
            program=world["program"],
            contact=world["contact"],
            inbound_id=7,
            text="START",
        )
    assert event_id is not None and state(container, world) is Status.PENDING
    [event] = events(container, world)
    assert event["id"] == event_id and event["evidence"]["inbound_id"] == 7
    assert outbox(container)[0]["kind"] == "signup"
