"""Inbound replies and status callbacks through the real HTTP routes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import campaigns, consent_events, contacts, inbound_messages, messages
from optline.bootstrap import Container
from optline.config import Settings
from optline.domain.consent import Action, Channel, Status
from optline.domain.phones import parse_phone
from optline.entrypoints.api.app import create_app
from optline.services import consent, outbox
from optline.services.outbox import Kind
from optline.services.programs import create_program
from tests.support import signing

PERSON, SENDER = "+14155550134", "+14155550100"
WEB = {
    "ip": "203.0.113.9",
    "user_agent": "Mozilla/5.0",
    "disclosure_text": "Reply STOP",
    "source_url": "https://x/j",
}
PROVIDERS = ["twilio", "vonage", "plivo", "telnyx", "simulator"]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


@pytest.fixture
def world(container: Container) -> dict[str, Any]:
    with container.db.transaction() as conn:
        deals = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="deals",
            brand="Acme Coffee",
            sender_numbers=[SENDER],
            optout_scope="program",
        )
        news = create_program(
            conn,
            container.clock,
            help_contact="https://acme.example/help",
            name="news",
            brand="Acme Coffee",
            sender_numbers=["+14155550101"],
        )
        person, _ = contact_repo.get_or_create(conn, parse_phone(PERSON), container.clock.now())
        for program in (deals, news):
            consent.record(
                conn,
                container.clock,
                contact_id=person["id"],
                program=program,
                action=Action.OPT_IN,
                channel=Channel.WEB,
                evidence=WEB,
            )
    return {"deals": deals, "news": news, "person": person}


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as c:
        yield c


def post(client: TestClient, clock: FrozenClock, provider: str, fx: dict[str, Any], **kw: Any) -> Any:
    s = signing.sign(provider, fx, "http://testserver", now=kw.pop("now", clock.now().timestamp()))
    return client.request(s.method, s.path, headers=s.headers, content=s.body)


def reply(client: TestClient, clock: FrozenClock, body: str, sid: str, provider: str = "twilio") -> Any:
    fx = signing.inbound_fixture(provider, sid=sid, from_=PERSON, to=SENDER, body=body)
    return post(client, clock, provider, fx)


def status(container: Container, world: dict[str, Any], program: str = "deals") -> tuple[Status, bool]:
    with container.db.read() as conn:
        return consent.current(conn, world["person"]["id"], world[program])


def rows(container: Container, table: Any, *where: Any) -> list[dict[str, Any]]:
    with container.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).where(*where).order_by(table.c.id))]


def events(container: Container, action: str | None = None) -> list[dict[str, Any]]:
    where = [consent_events.c.action == action] if action else []
    return rows(container, consent_events, *where)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stop_unsubscribes_before_the_answer(
    container: Container, world: dict, client: TestClient, clock: FrozenClock, provider: str
) -> None:
    response = reply(client, clock, "STOP", f"{provider}-1", provider)
    assert response.status_code == 200, response.text
    if provider == "twilio":
        assert response.text.endswith("<Response/>") and "xml" in response.headers["content-type"]
    assert status(container, world) == (Status.UNSUBSCRIBED, False)
    assert status(container, world, "news")[0] is Status.SUBSCRIBED  # the program's policy: this program only
    (inbound,) = rows(container, inbound_messages)
    assert inbound["intent"] == "optout" and inbound["provider"] == provider and inbound["contact_id"]
    (event,) = events(container, "opt_out")
    assert inbound["consent_event_id"] == event["id"] and event["channel"] == "sms_keyword"
    assert event["evidence"]["message_text"] == "STOP"
    (confirmation,) = rows(container, messages, messages.c.kind == Kind.CONFIRMATION.value)
    assert "Acme Coffee" in confirmation["body"] and "no more messages" in confirmation["body"]
    assert "START" in confirmation["body"] and confirmation["to_phone"] == PERSON


def test_duplicate_delivery_records_once(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    for _ in range(3):
        assert reply(client, clock, "stop texting me", "SMdup").status_code == 200
    assert len(rows(container, inbound_messages)) == 1
    assert len(events(container, "opt_out")) == 1
    assert len(rows(container, messages, messages.c.kind == Kind.CONFIRMATION.value)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_forged_request_is_refused_and_records_nothing(
    container: Container, world: dict, client: TestClient, clock: FrozenClock, provider: str
) -> None:
    fx = signing.inbound_fixture(provider, sid="forged", from_="+14155550199", to=SENDER, body="STOP")
    s = signing.sign(provider, fx, "http://testserver", now=clock.now().timestamp())
    forged = s.body.replace(b"STOP", b"QUIT") if s.body else s.body
    path = s.path.replace("STOP", "QUIT")
    assert client.request(s.method, path, headers=s.headers, content=forged).status_code == 403
    unsigned = {k: v for k, v in s.headers.items() if k == "content-type"}
    no_sig = re.sub(rb"&sig=[0-9a-f]+", b"", s.body)
    assert (
        client.request(s.method, s.path.split("&sig=")[0], headers=unsigned, content=no_sig).status_code
        == 403
    )
    assert rows(container, inbound_messages) == []
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar() == 1  # nobody created
    assert len(events(container)) == 2  # only the two opt-ins of the fixture


def test_replayed_telnyx_timestamp_is_refused(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    fx = signing.inbound_fixture("telnyx", sid="old", from_=PERSON, to=SENDER, body="STOP")
    assert post(client, clock, "telnyx", fx, now=clock.now().timestamp() - 6 * 60).status_code == 403
    assert rows(container, inbound_messages) == [] and status(container, world)[0] is Status.SUBSCRIBED


def test_exactly_one_confirmation_never_a_loop(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    for n, text in enumerate(["STOP", "stop", "STOP!!!", "unsubscribe"]):
        assert reply(client, clock, text, f"SMloop{n}").status_code == 200
        clock.advance(seconds=30)
    assert len(rows(container, messages, messages.c.kind == Kind.CONFIRMATION.value)) == 1
    assert len(events(container, "opt_out")) == 4  # every request is evidence; the state stays unsubscribed
    clock.advance(minutes=6)  # FCC: a later STOP may be confirmed again, once
    reply(client, clock, "STOP", "SMlater")
    assert len(rows(container, messages, messages.c.kind == Kind.CONFIRMATION.value)) == 2


def test_opted_out_persons_chatter_changes_nothing(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, "STOP", "SM1")
    before_events, before_msgs = len(events(container)), len(rows(container, messages))
    for n, text in enumerate(["hello?", "Yes, what time do you open?", "no", "I'll stop by later", "x"]):
        assert reply(client, clock, text, f"SMchat{n}").status_code == 200
    assert len(events(container)) == before_events and len(rows(container, messages)) == before_msgs
    assert status(container, world) == (Status.UNSUBSCRIBED, False)
    # Only an explicit keyword brings them back, with one confirmation.
    reply(client, clock, "START", "SMback")
    assert status(container, world)[0] is Status.SUBSCRIBED
    (optin,) = events(container, "opt_in")[-1:]
    assert optin["channel"] == "sms_keyword" and optin["evidence"]["message_text"] == "START"
    assert "subscribed to deals" in rows(container, messages)[-1]["body"]


def test_help_text_whether_subscribed_or_not(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, "HELP", "SMh1")
    reply(client, clock, "STOP", "SMh2")
    reply(client, clock, "AYUDA", "SMh3")
    helps = rows(container, messages, messages.c.kind == Kind.HELP.value)
    assert len(helps) == 2 and helps[0]["body"] == world["deals"]["help_text"]
    assert "Msg & data rates may apply" in helps[0]["body"] and "STOP" in helps[0]["body"]
    assert (
        "ayuda en https://acme.example/help" in helps[1]["body"] and "STOP" in helps[1]["body"]
    )  # in Spanish


def test_ambiguous_reply_holds_marketing_for_review(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    reply(client, clock, "No", "SMno")
    assert status(container, world) == (Status.SUBSCRIBED, True)
    (hold,) = events(container, "review_hold")
    (inbound,) = rows(container, inbound_messages)
    assert inbound["review"] and inbound["consent_event_id"] == hold["id"]
    assert rows(container, messages) == []  # no reply to an ambiguous message


def test_stopall_is_brand_wide_and_twilio_optout_type_is_respected(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    fx = signing.inbound_fixture("twilio", sid="SMall", from_=PERSON, to=SENDER, body="STOPALL")
    fx["params"]["OptOutType"] = "STOP"
    assert post(client, clock, "twilio", fx).status_code == 200
    assert (
        status(container, world)[0] is Status.UNSUBSCRIBED
        and status(container, world, "news")[0] is Status.UNSUBSCRIBED
    )
    assert events(container, "opt_out")[0]["program_id"] is None
    assert rows(container, messages) == []  # Twilio's Advanced Opt-Out already answered


def test_attribution_to_last_campaign(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    with container.db.transaction() as conn:
        ids = [
            conn.execute(
                insert(campaigns)
                .values(program_id=world["deals"]["id"], name=n, template="hi", created_at=clock.now())
                .returning(campaigns.c.id)
            ).scalar()
            for n in ("fall", "winter")
        ]
        for n, campaign_id in enumerate(ids):
            msg = outbox.enqueue(
                conn,
                clock,
                program_id=world["deals"]["id"],
                contact_id=world["person"]["id"],
                to_phone=PERSON,
                kind=Kind.MARKETING,
                body="Deal",
                idempotency_key=f"c{n}",
                campaign_id=campaign_id,
            )
            clock.advance(minutes=1)
            conn.execute(
                update(messages).where(messages.c.id == msg["id"]).values(status="sent", sent_at=clock.now())
            )
    reply(client, clock, "please stop texting me", "SMattr")
    (inbound,) = rows(container, inbound_messages)
    assert inbound["attributed_campaign_id"] == ids[1]
    assert events(container, "opt_out")[0]["channel"] == "sms_text"


def _sent_message(container: Container, world: dict, provider: str, sid: str) -> int:
    with container.db.transaction() as conn:
        msg = outbox.enqueue(
            conn,
            container.clock,
            program_id=world["deals"]["id"],
            contact_id=world["person"]["id"],
            to_phone=PERSON,
            kind=Kind.MARKETING,
            body="Deal",
            idempotency_key=sid,
        )
        conn.execute(
            update(messages)
            .where(messages.c.id == msg["id"])
            .values(status="sent", provider=provider, provider_message_id=sid)
        )
    return int(msg["id"])


@pytest.mark.parametrize(
    ("provider", "code", "raw_status"), [("twilio", "21610", "failed"), ("telnyx", "40300", "sending_failed")]
)
def test_provider_opted_out_status_becomes_a_ledger_event(
    container: Container,
    world: dict,
    client: TestClient,
    clock: FrozenClock,
    provider: str,
    code: str,
    raw_status: str,
) -> None:
    msg_id = _sent_message(container, world, provider, "SMout1")
    fx = signing.status_fixture(provider, sid="SMout1", status=raw_status, error_code=code)
    for _ in range(2):  # at least once: the second delivery changes nothing
        assert post(client, clock, provider, fx).status_code == 200
    (msg,) = rows(container, messages, messages.c.id == msg_id)
    assert msg["status"] == "failed" and msg["error_code"] == code
    (event,) = events(container, "opt_out")
    assert event["channel"] == "provider" and event["evidence"]["error_code"] == code
    assert status(container, world)[0] is Status.UNSUBSCRIBED


def test_delivery_status_moves_forward_only(
    container: Container, world: dict, client: TestClient, clock: FrozenClock
) -> None:
    msg_id = _sent_message(container, world, "twilio", "SMd1")
    for state in ("delivered", "sent", "delivered"):
        assert (
            post(
                client, clock, "twilio", signing.status_fixture("twilio", sid="SMd1", status=state)
            ).status_code
            == 200
        )
    (msg,) = rows(container, messages, messages.c.id == msg_id)
    assert msg["status"] == "delivered" and msg["delivered_at"] is not None
    assert (
        post(
            client, clock, "twilio", signing.status_fixture("twilio", sid="unknown", status="delivered")
        ).status_code
        == 200
    )
    assert events(container, "opt_out") == []


def test_failure_to_commit_answers_500_and_records_nothing(
    container: Container, world: dict, client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optline.services import consent as consent_service

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(consent_service, "record", broken)
    assert reply(client, clock, "STOP", "SMfail").status_code == 500
    assert rows(container, inbound_messages) == []  # rolled back: the provider's retry will record it
    monkeypatch.undo()
    assert reply(client, clock, "STOP", "SMfail").status_code == 200
    assert status(container, world)[0] is Status.UNSUBSCRIBED


def test_double_opt_in_programs_hand_keyword_opt_ins_to_the_signup_seam(
    container: Container, client: TestClient, clock: FrozenClock
) -> None:
    from optline.entrypoints.api.webhooks import SIGNUP_HOOK

    with container.db.transaction() as conn:
        vip = create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name="vip",
            brand="Acme",
            sender_numbers=[SENDER],
            double_opt_in=True,
            join_keywords=["vip"],
        )
    calls: list[dict[str, Any]] = []
    container.extras[SIGNUP_HOOK] = lambda conn, clock, **kw: calls.append(kw)
    assert reply(client, clock, "START", "SMvip").status_code == 200  # an explicit opt-in word
    assert [(c["program"]["id"], c["text"]) for c in calls] == [(vip["id"], "START")]
    assert (
        events(container) == [] and rows(container, messages) == []
    )  # the sign-up flow decides what follows
    del container.extras[SIGNUP_HOOK]
    # The program's own join keyword goes to the sign-up flow (services/signup.py) before classification:
    # pending, and the double opt-in prompt is queued.
    reply(client, clock, "VIP", "SMvip2")
    with container.db.read() as conn:
        person = contact_repo.get_by_phone(conn, PERSON)
        assert person and consent.current(conn, person["id"], vip)[0] is Status.PENDING
    assert [m["kind"] for m in rows(container, messages)] == ["signup"]


INBOUND_FIXTURES = [
    (provider, fx)
    for provider in PROVIDERS
    for fx in json.loads(
        (Path(__file__).parents[1] / "providers" / "fixtures" / f"{provider}.json").read_text()
    )
    if fx["kind"] == "inbound"
]


@pytest.mark.parametrize(
    ("provider", "fx"), INBOUND_FIXTURES, ids=[f"{p}:{f['name']}" for p, f in INBOUND_FIXTURES]
)
def test_every_inbound_fixture_over_http(
    container: Container,
    world: dict,
    client: TestClient,
    clock: FrozenClock,
    provider: str,
    fx: dict[str, Any],
) -> None:
    if provider == "vonage":  # the signature method is an account setting at Vonage, and so here
        container.settings.vonage_signature_method = fx.get("mode", "md5hash")
    assert post(client, clock, provider, fx).status_code == 200
    (inbound,) = rows(container, inbound_messages)
    assert inbound["provider_message_id"] == fx["expect"]["provider_message_id"]
    assert inbound["body"] == fx["expect"]["body"] and inbound["program_id"] == world["deals"]["id"]
