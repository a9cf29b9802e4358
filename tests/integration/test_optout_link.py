"""The personal opt-out link added by default (issue 15), on both engines, through the real worker and the
simulator: the text a person receives carries ``<public url>/u/<token>``, that link opens the page whose
POST unsubscribes them (a web ledger event naming the message), and what was predicted before sending (the
preview, lint's segment count) is what was sent."""

from __future__ import annotations

import re
import threading
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from optline.adapters.db import api_keys
from optline.adapters.db import programs as program_repo
from optline.adapters.db.tables import consent_events, messages, simulator_messages, subscriptions
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from optline.entrypoints.worker import run
from optline.services import campaign_view, campaigns
from optline.services import programs as program_service
from tests.support import outbound, web

# No personal fields: the preview and lint fill fields with examples, so only a template without any is
# predicted to the character (the link is what is under test).
# 108 characters: one segment with "Reply STOP to opt out." (132), two with the link (171).
TEMPLATE = "Acme: our autumn blend is here, 15% off beans all week in store and online, and a free pastry with every bag"
LINK = re.compile(r"(http://testserver/u/([A-Za-z0-9]+))$")


def _send(container: Container, name: str, template: str = TEMPLATE, message_type: str = "marketing") -> None:
    with container.db.transaction() as conn:
        draft = campaigns.create(
            conn, container.clock, program="deals", name=name, template=template, message_type=message_type
        )
        campaigns.start(conn, container.clock, draft, public_url=container.settings.public_url)
    run(container, threading.Event(), once=True)  # the worker, its send-time check and the simulator


def _sent(container: Container) -> list[Any]:
    with container.db.read() as conn:
        return list(
            conn.execute(
                select(simulator_messages)
                .where(simulator_messages.c.direction == "out")
                .order_by(simulator_messages.c.id)
            )
        )


def test_the_link_in_the_text_unsubscribes_that_person(container: Container) -> None:
    program, ids = outbound.seed(container, 2)
    _send(container, "autumn")
    sent = _sent(container)
    assert len(sent) == 2
    with container.db.read() as conn:
        rows = {r.to_phone: r for r in conn.execute(select(messages))}
    for sms in sent:
        # What the phone shows: the instruction, then the person's own link, last (nothing after it).
        found = LINK.search(sms.body)
        assert found, sms.body
        assert sms.body == f"{TEMPLATE}. Reply STOP to opt out or tap {found.group(1)}"
        assert found.group(2) == rows[sms.to_phone].optout_token and rows[sms.to_phone].body == sms.body

    # The first person taps their link: the page (GET changes nothing), then its button (POST).
    first = next(s for s in sent if s.to_phone == outbound.phone(0))
    url = LINK.search(first.body).group(1)  # type: ignore[union-attr]
    client = TestClient(create_app(container))
    page = client.get(url)
    assert page.status_code == 200 and "Unsubscribe" in page.text
    done = client.post(
        url,
        data={"csrf": web.csrf(page.text), "scope": "program"},
        headers={"origin": "http://testserver", "user-agent": "Phone/1.0"},
    )
    assert done.status_code == 200 and "You're unsubscribed" in done.text
    with container.db.read() as conn:
        event = conn.execute(select(consent_events).order_by(consent_events.c.id.desc()).limit(1)).one()
        status = dict(
            conn.execute(
                select(subscriptions.c.contact_id, subscriptions.c.status).where(
                    subscriptions.c.program_id == program["id"]
                )
            ).all()
        )
    assert (event.action, event.channel, event.contact_id) == ("opt_out", "web", ids[0])
    assert event.evidence["message_id"] == rows[outbound.phone(0)].id and event.evidence["url"] == url
    assert status == {ids[0]: "unsubscribed", ids[1]: "subscribed"}  # only the person whose link it was


def test_what_is_predicted_before_sending_is_what_is_sent(container: Container) -> None:
    program, _ = outbound.seed(container, 1)
    draft = {
        "program_id": program["id"],
        "template": TEMPLATE,
        "message_type": "marketing",
        "audience_filter": {},
    }
    with container.db.read() as conn:
        lint = campaigns.lint(conn, container.clock, draft, public_url=container.settings.public_url)
        preview = campaign_view.preview(
            conn,
            container.clock,
            program_id=program["id"],
            template=TEMPLATE,
            message_type="marketing",
            audience_filter={},
            at=None,
            public_url=container.settings.public_url,
        )
    _send(container, "autumn")
    (sms,) = _sent(container)
    with container.db.read() as conn:
        row = conn.execute(select(messages)).one()
    assert lint.segments is not None and preview.info is not None and preview.text is not None
    # The link makes this text two segments (one without it): the figures shown said so beforehand.
    assert row.segments == lint.segments.segments == preview.info.segments == 2
    assert len(preview.text) == len(sms.body) and lint.segments.units == len(sms.body)


def _settings(container: Container, program: dict[str, Any], **changes: Any) -> None:
    with container.db.transaction() as conn:
        fields: dict[str, Any] = {
            "help_contact": program["help_contact"],
            "optout_scope": program["optout_scope"],
        }
        program_service.update_program(conn, program["id"], **{**fields, **changes})


def test_setting_off_monthly_policy_and_transactional(container: Container) -> None:
    program, _ = outbound.seed(container, 1)
    _settings(container, program, optout_link=False)
    _send(container, "plain")
    assert _sent(container)[-1].body == f"{TEMPLATE}. Reply STOP to opt out."

    # Monthly policy with the link on: the month's first message had the STOP sentence (above); this one
    # carries the link alone.
    _settings(container, program, optout_link=True, optout_instruction="monthly")
    _send(container, "second")
    body = _sent(container)[-1].body
    assert re.fullmatch(re.escape(f"{TEMPLATE}. Opt out: ") + r"http://testserver/u/\w+", body), body

    _send(container, "shipped", "Acme: your order shipped", message_type="transactional")
    assert _sent(container)[-1].body == "Acme: your order shipped"  # never a link nor an instruction


def test_the_setting_through_the_api_create_and_read(container: Container) -> None:
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "tests", container.clock.now())
    client = TestClient(create_app(container), headers={"Authorization": f"Bearer {key}"})
    body = {"name": "news", "brand": "Acme", "help_contact": "https://acme.example/help"}
    made = client.post("/v1/programs", json=body)
    assert made.status_code == 201 and made.json()["optout_link"] is True
    off = client.post("/v1/programs", json={**body, "name": "quiet", "optout_link": False})
    assert off.status_code == 201 and off.json()["optout_link"] is False
    assert client.get("/v1/programs/quiet").json()["optout_link"] is False
    bad = client.post("/v1/programs", json={**body, "name": "bad", "optout_link": "sometimes"})
    assert bad.status_code == 422 and "optout_link" in bad.text
    with container.db.read() as conn:
        assert (program_repo.get_by_name(conn, "quiet") or {})["settings"]["optout_link"] is False
    # PATCH changes only what it names, with the program page's rules.
    changed = client.patch(
        "/v1/programs/quiet", json={"optout_link": True, "quiet_hours": {"start": "09:00", "end": "20:00"}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["optout_link"] is True and changed.json()["quiet_hours"] == {
        "start": "09:00",
        "end": "20:00",
    }
    assert client.patch("/v1/programs/quiet", json={"optout_instruction": "monthly"}).json()[
        "quiet_hours"
    ] == {"start": "09:00", "end": "20:00"}
    early = client.patch("/v1/programs/quiet", json={"quiet_hours": {"start": "07:30", "end": "20:00"}})
    assert early.status_code == 422 and "sending window start 07:30 is before 08:00" in early.text
    assert client.patch("/v1/programs/nope", json={"optout_link": False}).status_code == 404
    with container.db.read() as conn:
        settings = (program_repo.get_by_name(conn, "quiet") or {})["settings"]
    assert settings["optout_instruction"] == "monthly" and settings["optout_link"] is True
