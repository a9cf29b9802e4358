"""Demo data: a brand, a few hundred consenting contacts, two campaigns through the simulator, and replies.

Everything goes through the real write paths — ``consent.record``/``record_opt_ins`` for consent,
``outbox.enqueue`` for every message, ``inbound.record_inbound`` for every reply (classified and answered
as a real one would be), ``web_optout.unsubscribe`` for link taps — on a clock moved through the last five
weeks, so every page and chart shows something true. Deterministic for a given seed.

Sending is done here against the tables (``_hand_over`` plays the simulator provider: the row in
``simulator_messages`` and the message marked delivered) until the campaign and dispatch services exist on
main to call instead.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.tables import (
    campaigns,
    messages,
    simulator_messages,
    subscriptions,
)
from optline.adapters.providers.base import InboundSms
from optline.bootstrap import Container
from optline.domain.classify import Intent
from optline.domain.consent import Channel
from optline.domain.optout_links import new_token, optout_url
from optline.domain.phones import parse_phone
from optline.services import consent, inbound, outbox, web_optout
from optline.services import programs as program_service
from optline.services.inbound import InboundResult

PROGRAM = "demo-deals"
BRAND = "Bluebird Coffee"
SENDER = "+14155550100"
AREA_CODES = ("415", "212", "312", "512", "206", "305", "617", "303")

STOP_WORDS = ["STOP", "Stop", "stop", "UNSUBSCRIBE", "STOPALL", "cancel"]
FREE_TEXT_OPTOUTS = [
    "please remove me from this list", "no more texts please", "Stop texting me", "take me off your list",
    "I don't want these messages anymore", "unsubscribe me pls", "Por favor no me envíen más mensajes",
    "Arrêtez de m'envoyer des messages",
]  # fmt: skip
HELP_WORDS = ["HELP", "help", "Info"]
CHATTER = [
    "Thanks! See you Saturday", "what time do you open on sunday?", "Love the autumn blend ☕", "👍",
    "Is the Mission St store open late?", "ok", "Do you ship to Canada?", "yum", "who is this?",
    "not interested right now",
]  # fmt: skip
# Short refusals a person should look at before anything changes (the classifier sends them to review).
AMBIGUOUS = ["no", "No thanks", "nope", "nah", "x", "no thx"]


class DemoAlreadyLoaded(ValueError):
    pass


@dataclass
class DemoSummary:
    program: str
    contacts: int
    campaigns: int
    sent: int
    replies: int
    optouts: int
    in_review: int


@dataclass(frozen=True)
class _Plan:
    name: str
    template: str
    days_ago: float
    stop: float  # share of recipients replying a STOP keyword
    free_text: float  # free-text opt-outs
    link: float  # taps on the opt-out link
    help: float
    chatter: float
    ambiguous: int


CAMPAIGNS = (
    _Plan(
        "Autumn blend launch",
        "{brand}: Our autumn blend is here. 15% off beans all week in store and online. Opt out: {link}",
        days_ago=24, stop=0.006, free_text=0.003, link=0.003, help=0.01, chatter=0.03, ambiguous=2,
    ),
    _Plan(
        "Weekend 2-for-1 lattes",
        "{brand}: LAST CHANCE!!! 2-for-1 lattes this weekend only. Don't miss out! Opt out: {link}",
        days_ago=6, stop=0.035, free_text=0.02, link=0.015, help=0.006, chatter=0.02, ambiguous=3,
    ),
)  # fmt: skip


def load(container: Container, *, contacts: int = 300, seed: int = 7) -> DemoSummary:
    """Load the demo into the database; refuses when it is already there."""
    rnd = random.Random(seed)
    end = container.clock.now()
    clock = FrozenClock(end - timedelta(days=40))
    public_url = container.settings.public_url
    with container.db.transaction() as conn:
        if program_service.get_program(conn, PROGRAM) is not None:
            raise DemoAlreadyLoaded(f"the demo program {PROGRAM!r} already exists")
        program = program_service.create_program(
            conn, clock, name=PROGRAM, brand=BRAND, sender_numbers=[SENDER], optout_scope="brand",
            frequency_text="Up to 4 msgs/month", terms_url="https://example.com/terms",
        )  # fmt: skip
        people = _contacts(conn, clock, program, contacts, rnd)
        summary = DemoSummary(PROGRAM, len(people), 0, 0, 0, 0, 0)
        for plan in CAMPAIGNS:
            # Mid-morning on the US west coast, early afternoon in the east: inside everyone's sending hours.
            day = end - timedelta(days=plan.days_ago)
            clock = FrozenClock(day.replace(hour=17, minute=30, second=0, microsecond=0))
            _campaign(conn, clock, program, plan, rnd, public_url, end, summary)
    return summary


def _contacts(
    conn: Connection, clock: FrozenClock, program: dict[str, Any], count: int, rnd: random.Random
) -> list[dict[str, Any]]:
    people, items = [], []
    numbers = rnd.sample(range(2000, 9999), count)
    for i, n in enumerate(numbers):
        phone = parse_phone(f"+1{AREA_CODES[i % len(AREA_CODES)]}555{n:04d}", "US")
        contact, _ = contact_repo.get_or_create(conn, phone, clock.now(), attributes={"demo": True})
        people.append(contact)
        signed_up = clock.now() - timedelta(days=rnd.uniform(5, 200))
        source = rnd.choice(["in-store sign-up tablet", "checkout page checkbox", "loyalty app"])
        evidence = {
            "source": f"demo: {source}",
            "disclosure_text": f"Yes, text me offers from {BRAND}. Up to 4 msgs/month. Msg & data rates may "
            "apply. Reply STOP to cancel, HELP for help.",
        }
        items.append(consent.BatchOptIn(contact["id"], evidence, signed_up))
    consent.record_opt_ins(conn, clock, program, Channel.IMPORT, items)
    return people


def _audience(conn: Connection, program: dict[str, Any]) -> list[dict[str, Any]]:
    from optline.adapters.db.tables import contacts

    rows = conn.execute(
        select(contacts.c.id, contacts.c.phone)
        .join(subscriptions, subscriptions.c.contact_id == contacts.c.id)
        .where(
            (subscriptions.c.program_id == program["id"])
            & (subscriptions.c.status == "subscribed")
            & subscriptions.c.held.is_(False)
        )
        .order_by(contacts.c.id)
    )
    return [dict(r._mapping) for r in rows]


def _campaign(
    conn: Connection,
    clock: FrozenClock,
    program: dict[str, Any],
    plan: _Plan,
    rnd: random.Random,
    public_url: str,
    end: datetime,
    summary: DemoSummary,
) -> None:
    start = clock.now()
    campaign_id = conn.execute(
        insert(campaigns)
        .values(
            program_id=program["id"], name=plan.name, template=plan.template, message_type="marketing",
            audience_filter={}, status="sending", created_at=start - timedelta(hours=2), started_at=start,
        )
        .returning(campaigns.c.id)
    ).scalar_one()  # fmt: skip
    sent: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for person in _audience(conn, program):
        token = new_token()
        body = plan.template.format(brand=BRAND, link=optout_url(public_url, token))
        msg = outbox.enqueue(
            conn, clock, program_id=program["id"], contact_id=person["id"], to_phone=person["phone"],
            from_phone=SENDER, kind=outbox.Kind.MARKETING, body=body, campaign_id=campaign_id,
            idempotency_key=outbox.key("demo", campaign_id, person["id"]), optout_token=token,
            segments=1 if len(body) <= 160 else 2,
        )  # fmt: skip
        clock.advance(seconds=0.4)
        _hand_over(conn, clock, msg, delivered=rnd.random() > 0.02)
        sent.append((person, msg))
    conn.execute(
        update(campaigns).where(campaigns.c.id == campaign_id).values(status="done", finished_at=clock.now())
    )
    summary.campaigns += 1
    summary.sent += len(sent)

    # Who answers, how, and when (most within hours, a tail over days), replayed in time order.
    reactions: list[tuple[datetime, str, dict[str, Any], dict[str, Any]]] = []
    pool = list(sent)
    rnd.shuffle(pool)
    cursor = 0
    for kind, share in (("stop", plan.stop), ("free", plan.free_text), ("link", plan.link),
                        ("help", plan.help), ("chatter", plan.chatter)):  # fmt: skip
        n = max(1, round(share * len(sent)))
        for person, msg in pool[cursor : cursor + n]:
            reactions.append((_reply_time(start, rnd, end), kind, person, msg))
        cursor += n
    for person, msg in pool[cursor : cursor + plan.ambiguous]:
        reactions.append((_reply_time(start, rnd, end), "ambiguous", person, msg))
    reactions.sort(key=lambda r: r[0])
    for at, kind, person, msg in reactions:
        clock = FrozenClock(at)
        if kind == "link":
            web_optout.unsubscribe(
                conn, clock, msg["optout_token"], all_brand=False, ip=f"203.0.113.{rnd.randint(2, 250)}",
                user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                url=optout_url(public_url, msg["optout_token"]),
            )  # fmt: skip
            summary.optouts += 1
            continue
        words = {"stop": STOP_WORDS, "free": FREE_TEXT_OPTOUTS, "help": HELP_WORDS, "chatter": CHATTER}
        result = _receive(conn, clock, person, rnd.choice(words.get(kind, AMBIGUOUS)))
        summary.replies += 1
        c = result.classification
        if c and c.review:
            summary.in_review += 1  # held for a person to decide, not (yet) an opt-out
        elif c and c.intent is Intent.OPTOUT and result.consent_event_id:
            summary.optouts += 1


def _reply_time(start: datetime, rnd: random.Random, end: datetime) -> datetime:
    at = start + timedelta(minutes=2 + rnd.expovariate(1 / 600))  # mean ten hours after the send
    return min(at, end - timedelta(minutes=5))


def _sid() -> str:
    return "SM" + secrets.token_hex(16)


def _hand_over(conn: Connection, clock: FrozenClock, msg: dict[str, Any], *, delivered: bool) -> None:
    """What the simulator provider does with a message: it lands in the simulated phone's inbox."""
    sid, now = _sid(), clock.now()
    conn.execute(
        insert(simulator_messages).values(
            direction="out", sid=sid, from_phone=msg["from_phone"] or SENDER, to_phone=msg["to_phone"],
            body=msg["body"], status="delivered" if delivered else "undelivered", created_at=now,
        )
    )  # fmt: skip
    conn.execute(
        update(messages)
        .where(messages.c.id == msg["id"])
        .values(
            status="delivered" if delivered else "undelivered", provider="simulator", provider_message_id=sid,
            attempts=1, handed_over_at=now, sent_at=now, delivered_at=now + timedelta(seconds=3) if delivered else None,
            error_code=None if delivered else "30003", error_message=None if delivered else "unreachable handset",
            updated_at=now,
        )
    )  # fmt: skip


def _receive(conn: Connection, clock: FrozenClock, person: dict[str, Any], text: str) -> InboundResult:
    """A reply typed on the simulated phone, through the inbound service (classified, acted on, answered)."""
    sid, now = _sid(), clock.now()
    conn.execute(
        insert(simulator_messages).values(
            direction="in", sid=sid, from_phone=person["phone"], to_phone=SENDER, body=text, status="received",
            created_at=now,
        )
    )  # fmt: skip
    sms = InboundSms(provider="simulator", provider_message_id=sid, from_phone=person["phone"], to_phone=SENDER,
                     body=text, received_at=now)  # fmt: skip
    result = inbound.record_inbound(conn, clock, sms)
    for message_id in result.replies:  # the confirmation or HELP answer it queued
        clock.advance(seconds=2)
        reply = conn.execute(select(messages).where(messages.c.id == message_id)).one()
        _hand_over(conn, clock, dict(reply._mapping), delivered=True)
    return result
