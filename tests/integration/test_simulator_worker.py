"""The embedded default: the simulator provider and the worker loop, on both engines."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from optline.adapters.db.tables import simulator_messages
from optline.adapters.providers import http_errors
from optline.adapters.providers.base import OutboundSms
from optline.adapters.providers.registry import build_sender, status_callback_url
from optline.adapters.providers.simulator.send import SimulatorSender
from optline.bootstrap import Container, sender
from optline.config import Settings
from optline.entrypoints.worker import run
from optline.services import campaigns
from tests.support import outbound


def test_worker_sends_through_the_simulator(container: Container) -> None:
    outbound.seed(container, 3)
    with container.db.transaction() as conn:
        campaign = campaigns.create(
            conn, container.clock, program="deals", name="sim", template="Hello {{ first_name }}"
        )
        campaigns.start(conn, container.clock, campaign, public_url=container.settings.public_url)
    assert isinstance(sender(container), SimulatorSender)
    total = run(container, threading.Event(), once=True)
    assert total.sent == 3
    with container.db.read() as conn:
        out = conn.execute(select(simulator_messages).order_by(simulator_messages.c.to_phone)).all()
        st = campaigns.status(conn, campaign)
    assert [m.direction for m in out] == ["out"] * 3 and out[0].body.startswith("Acme: Hello P")
    # Like a provider, the simulator posts a delivery receipt for each message (through services/receipts).
    assert st.campaign["status"] == "done" and st.counts == {"delivered": 3}


def test_simulator_resend_is_idempotent(container: Container) -> None:
    sim = SimulatorSender(container.db, container.clock)
    sms = OutboundSms(to="+14155550134", from_=None, body="Acme hi", idempotency_key="k1")
    first, second = http_errors.run(lambda h: sim.send(h, sms)), http_errors.run(lambda h: sim.send(h, sms))
    found = http_errors.run(lambda h: sim.find_sent(h, sms, container.clock.now()))
    assert first == second and found == first.provider_message_id
    with container.db.read() as conn:
        assert len(conn.execute(select(simulator_messages)).all()) == 1


@pytest.mark.parametrize("provider", ["twilio", "vonage", "plivo", "telnyx"])
def test_registry_builds_each_provider_and_refuses_missing_credentials(
    container: Container, provider: str
) -> None:
    creds = {"twilio_account_sid": "AC1", "twilio_auth_token": "tok1", "vonage_api_key": "k", "vonage_api_secret": "s1s1",
             "plivo_auth_id": "MA1", "plivo_auth_token": "tok2", "telnyx_api_key": "KEY1"}  # fmt: skip
    settings = Settings(env="test", database_url=container.settings.database_url, provider=provider, **creds)
    assert build_sender(settings, container.db).name == provider
    assert status_callback_url(settings) == f"{settings.public_url}/webhooks/{provider}/status"
    with pytest.raises(ValueError, match="OPTLINE_"):
        build_sender(
            Settings(env="test", database_url=container.settings.database_url, provider=provider),
            container.db,
        )
