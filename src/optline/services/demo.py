"""Demo data: a brand, a few hundred consenting contacts, two campaigns through the simulator, and replies.

Everything goes through the real paths, on a clock moved through the last five weeks so every page and
chart shows something true: ``consent.record_opt_ins`` for consent; ``services.campaigns`` (create, then
start: lint, audience, outbox) and the dispatcher (``services.dispatch``: the send-time check, quiet hours,
caps, composition) with the simulator sender for every message — the same stages ``optline serve``'s
in-process worker and ``optline campaigns send`` run; ``inbound.record_status`` (the use case behind
``/webhooks/simulator/status``) for delivery receipts; ``inbound.record_inbound`` for every reply
(classified, acted on and answered — the answers dispatched like any message); ``web_optout.unsubscribe``
for link taps. The same seed gives the same people, replies and figures (link tokens and sids are
random, as in any campaign).

Delivery: the simulator sender answers ``sent`` (it only stores the message). The simulated handsets then
report delivery the way a carrier does, as status callbacks: 98% delivered, 2% undelivered (error 30003,
"unreachable handset"; the simulator's own copy is marked the same), so the delivered and failed counts
come from the status path, not from this module writing them.

Why the demo claims its messages itself, in the transaction that queued them: its clock is in the past,
while ``optline serve`` may run a worker on the wall clock against the same database (the dashboard's
"Load demo data"). Claimed at once, under a lease that outlasts the demo, no other worker can pick one up
and send it "today"; the demo then checks, sends and records them with its own clock.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts as contact_repo
from optline.adapters.db.database import Database
from optline.adapters.db.tables import messages, simulator_messages
from optline.adapters.providers.base import InboundSms, StatusUpdate
from optline.adapters.providers.simulator.send import SimulatorSender
from optline.bootstrap import Container
from optline.domain.classify import Intent
from optline.domain.consent import Channel
from optline.domain.optout_links import optout_url
from optline.domain.phones import parse_phone
from optline.services import campaigns as campaign_service
from optline.services import consent, inbound, web_optout
from optline.services import programs as program_service
from optline.services.dispatch import ACTIVE, Counts, DispatchConfig, Dispatcher
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
        "{{ brand }}: Our autumn blend is here. 15% off beans all week in store and online. Opt out: {{ optout_url }}",
        days_ago=24,
        stop=0.006,
        free_text=0.003,
        link=0.003,
        help=0.01,
        chatter=0.03,
        ambiguous=2,
    ),
    _Plan(
        "Weekend 2-for-1 lattes",
        "{{ brand }}: LAST CHANCE!!! 2-for-1 lattes this weekend only. Don't miss out! Opt out: {{ optout_url }}",
        days_ago=6,
        stop=0.035,
        free_text=0.02,
        link=0.015,
        help=0.006,
        chatter=0.02,
        ambiguous=3,
    ),
)
UNDELIVERED = 0.02  # share of handsets the simulated carrier cannot reach
BATCH = 100  # messages per dispatch batch, as a worker takes them


class DemoRefused(ValueError):
    """The database is not one the demo can be loaded into; the message says why."""


def load(container: Container, *, contacts: int = 300, seed: int = 7) -> DemoSummary:
    """Load the demo into the database; refuses when it is already there (or messages are waiting)."""
    rnd = random.Random(seed)
    end = container.clock.now()
    clock = FrozenClock(end - timedelta(days=40))
    db = container.db
    with db.transaction() as conn:
        if program_service.get_program(conn, PROGRAM) is not None:
            raise DemoAlreadyLoaded(f"the demo program {PROGRAM!r} already exists")
        waiting = conn.execute(select(func.count()).where(messages.c.status.in_(ACTIVE))).scalar_one()
        if waiting:  # the demo's dispatcher would take them too, with its clock in the past
            raise DemoRefused(
                f"{waiting} messages are waiting to be sent; load the demo into a fresh database"
            )
        program = program_service.create_program(
            conn,
            clock,
            help_contact="https://acme.example/help",
            name=PROGRAM,
            brand=BRAND,
            sender_numbers=[SENDER],
            optout_scope="brand",
            frequency_text="Up to 4 msgs/month",
            terms_url="https://example.com/terms",
        )
        people = _contacts(conn, clock, program, contacts, rnd)
    summary = DemoSummary(PROGRAM, len(people), 0, 0, 0, 0, 0)
    # The lease outlasts the demo by an hour (see the module docstring): measured from its oldest clock.
    config = DispatchConfig(
        batch_size=BATCH,
        lease=end - clock.now() + timedelta(hours=1),
        public_url=container.settings.public_url,
    )
    dispatcher = Dispatcher(db, clock, SimulatorSender(db, clock), config, worker_id="optline-demo")
    for plan in CAMPAIGNS:
        # Quiet hours: each campaign goes out at 17:30 UTC of its (past) day on the demo's clock, not the
        # wall clock: 9:30-10:30 on the US west coast, 12:30-13:30 in the east — inside the sending hours
        # of every demo contact (US numbers, each with its area code's time zone, the strictest state
        # window included), so the dispatcher's quiet-hours check lets them through whenever the demo is
        # loaded. The rule itself is the dispatcher's, unchanged.
        day = end - timedelta(days=plan.days_ago)
        _move(clock, day.replace(hour=17, minute=30, second=0, microsecond=0))
        _campaign(db, clock, dispatcher, plan, rnd, container.settings.public_url, end, summary)
    dispatcher.close()
    return summary


def _move(clock: FrozenClock, at: datetime) -> None:
    clock.advance(seconds=(at - clock.now()).total_seconds())


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


def _claim_all(conn: Connection, clock: FrozenClock, dispatcher: Dispatcher) -> list[dict[str, Any]]:
    """Claim everything due, in the caller's transaction (the one that queued it): see the docstring."""
    claimed: list[dict[str, Any]] = []
    while batch := dispatcher.claim(conn, clock.now(), BATCH):
        claimed.extend(batch)
    return claimed


def _send(
    db: Database,
    clock: FrozenClock,
    dispatcher: Dispatcher,
    claimed: list[dict[str, Any]],
    rnd: random.Random,
) -> Counts:
    """The dispatcher's stages for claimed messages, batch by batch (check, hand over, record), then the
    simulated handsets' delivery receipts through the inbound status path."""
    total = Counts(claimed=len(claimed))
    campaign_ids = {m["campaign_id"] for m in claimed if m["campaign_id"]}
    sent_ids: list[int] = []
    for i in range(0, len(claimed), BATCH):
        counts = Counts()
        with db.transaction() as conn:
            to_send = dispatcher.check(conn, claimed[i : i + BATCH], counts)
        outcomes = []
        for item in to_send:
            clock.advance(seconds=0.4)
            outcomes.append(dispatcher.deliver(item))
        with db.transaction() as conn:
            dispatcher.record(conn, to_send, outcomes, counts)
            campaign_service.finish_if_done(conn, clock, campaign_ids)
        sent_ids += [o.id for o in outcomes if o.values["status"] == "sent"]
        total.add(counts)
    clock.advance(seconds=3)
    _delivery_receipts(db, clock, sent_ids, rnd)
    return total


def _delivery_receipts(
    db: Database, clock: FrozenClock, message_ids: Iterable[int], rnd: random.Random
) -> None:
    ids = list(message_ids)
    if not ids:
        return
    with db.transaction() as conn:
        rows = conn.execute(
            select(messages.c.id, messages.c.provider_message_id)
            .where(messages.c.id.in_(ids))
            .order_by(messages.c.id)
        ).all()
        for row in rows:
            delivered = rnd.random() >= UNDELIVERED
            if not delivered:  # the simulated phone never got it: its copy says so too
                conn.execute(
                    update(simulator_messages)
                    .where(simulator_messages.c.sid == row.provider_message_id)
                    .values(status="undelivered")
                )
            inbound.record_status(
                conn,
                clock,
                StatusUpdate(
                    provider="simulator",
                    provider_message_id=row.provider_message_id,
                    status="delivered" if delivered else "undelivered",
                    error_code=None if delivered else "30003",
                    error_message=None if delivered else "unreachable handset",
                ),
            )


def _campaign(
    db: Database,
    clock: FrozenClock,
    dispatcher: Dispatcher,
    plan: _Plan,
    rnd: random.Random,
    public_url: str,
    end: datetime,
    summary: DemoSummary,
) -> None:
    start = clock.now()
    clock.advance(hours=-2)  # written a couple of hours before it went out
    with db.transaction() as conn:
        draft = campaign_service.create(conn, clock, program=PROGRAM, name=plan.name, template=plan.template)
    _move(clock, start)
    with db.transaction() as conn:
        campaign, _ = campaign_service.start(conn, clock, draft, public_url=public_url)
        claimed = _claim_all(conn, clock, dispatcher)
    counts = _send(db, clock, dispatcher, claimed, rnd)
    with db.read() as conn:
        sent = [
            dict(r._mapping)
            for r in conn.execute(
                select(messages.c.id, messages.c.contact_id, messages.c.to_phone, messages.c.optout_token)
                .where(
                    messages.c.campaign_id == campaign["id"],
                    messages.c.status.in_(("delivered", "undelivered")),
                )
                .order_by(messages.c.id)
            )
        ]
    summary.campaigns += 1
    summary.sent += counts.sent

    # Who answers, how, and when (most within hours, a tail over days), replayed in time order.
    reactions: list[tuple[datetime, str, dict[str, Any]]] = []
    pool = list(sent)
    rnd.shuffle(pool)
    cursor = 0
    for kind, share in (
        ("stop", plan.stop),
        ("free", plan.free_text),
        ("link", plan.link),
        ("help", plan.help),
        ("chatter", plan.chatter),
    ):
        n = max(1, round(share * len(sent)))
        for msg in pool[cursor : cursor + n]:
            reactions.append((_reply_time(start, rnd, end), kind, msg))
        cursor += n
    for msg in pool[cursor : cursor + plan.ambiguous]:
        reactions.append((_reply_time(start, rnd, end), "ambiguous", msg))
    reactions.sort(key=lambda r: r[0])
    for at, kind, msg in reactions:
        _move(clock, at)
        if kind == "link":
            with db.transaction() as conn:
                web_optout.unsubscribe(
                    conn,
                    clock,
                    msg["optout_token"],
                    all_brand=False,
                    ip=f"203.0.113.{rnd.randint(2, 250)}",
                    user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                    url=optout_url(public_url, msg["optout_token"]),
                )
            summary.optouts += 1
            continue
        words = {"stop": STOP_WORDS, "free": FREE_TEXT_OPTOUTS, "help": HELP_WORDS, "chatter": CHATTER}
        result = _receive(db, clock, dispatcher, msg["to_phone"], rnd.choice(words.get(kind, AMBIGUOUS)), rnd)
        summary.replies += 1
        c = result.classification
        if c and c.review:
            summary.in_review += 1  # held for a person to decide, not (yet) an opt-out
        elif c and c.intent is Intent.OPTOUT and result.consent_event_id:
            summary.optouts += 1


def _reply_time(start: datetime, rnd: random.Random, end: datetime) -> datetime:
    at = start + timedelta(minutes=2 + rnd.expovariate(1 / 600))  # mean ten hours after the send
    return min(at, end - timedelta(minutes=5))


def _receive(
    db: Database, clock: FrozenClock, dispatcher: Dispatcher, phone: str, text: str, rnd: random.Random
) -> InboundResult:
    """A reply typed on the simulated phone, through the inbound service (classified, acted on, answered);
    the answer it queues (opt-out confirmation, HELP text) is dispatched like any message."""
    sid, now = "SM" + secrets.token_hex(16), clock.now()
    with db.transaction() as conn:
        conn.execute(
            insert(simulator_messages).values(
                direction="in",
                sid=sid,
                from_phone=phone,
                to_phone=SENDER,
                body=text,
                status="received",
                created_at=now,
            )
        )
        sms = InboundSms(
            provider="simulator",
            provider_message_id=sid,
            from_phone=phone,
            to_phone=SENDER,
            body=text,
            received_at=now,
        )
        result = inbound.record_inbound(conn, clock, sms)
        claimed = _claim_all(conn, clock, dispatcher) if result.replies else []
    if claimed:
        clock.advance(seconds=2)
        _send(db, clock, dispatcher, claimed, rnd)
    return result
