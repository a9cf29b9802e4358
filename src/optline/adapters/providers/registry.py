"""Wiring: the configured provider's Sender (the one place that reads provider settings)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from optline.adapters.clock import Clock, SystemClock
from optline.adapters.db.database import Database
from optline.adapters.providers.base import Sender
from optline.config import Settings


def build_sender(settings: Settings, db: Database, clock: Clock | None = None) -> Sender:
    if settings.provider == "simulator":
        from optline.adapters.providers.simulator.send import SimulatorSender

        return SimulatorSender(db, clock or SystemClock())
    return http_sender(settings)


def http_sender(settings: Settings) -> Sender:
    """The Sender of an HTTP provider: needs nothing but its settings (so a courier process can build it)."""
    name = settings.provider
    if name == "twilio":
        from optline.adapters.providers.twilio.send import TwilioSender

        return TwilioSender(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                            settings.twilio_base_url, settings.twilio_messaging_service_sid)  # fmt: skip
    if name == "vonage":
        from optline.adapters.providers.vonage.send import VonageSender

        return VonageSender(settings.vonage_api_key, settings.vonage_api_secret.get_secret_value(),
                            settings.vonage_base_url)  # fmt: skip
    if name == "plivo":
        from optline.adapters.providers.plivo.send import PlivoSender

        return PlivoSender(settings.plivo_auth_id, settings.plivo_auth_token.get_secret_value(),
                           settings.plivo_base_url)  # fmt: skip
    if name == "telnyx":
        from optline.adapters.providers.telnyx.send import TelnyxSender

        return TelnyxSender(settings.telnyx_api_key.get_secret_value(), settings.telnyx_base_url)
    raise ValueError(
        f"unknown provider {name!r} (OPTLINE_PROVIDER: simulator, twilio, vonage, plivo, telnyx)"
    )


def courier_factory(settings: Settings) -> Callable[[], Sender] | None:
    """How a courier process builds the provider's Sender; None where calls stay in the worker's process
    (the simulator stores messages in the database; or OPTLINE_WORKER_COURIER=false)."""
    if settings.provider == "simulator" or not settings.worker_courier:
        return None
    return partial(http_sender, settings)


def status_callback_url(settings: Settings) -> str | None:
    """Where the provider posts delivery status (served by the inbound webhooks); None for the simulator."""
    if settings.provider == "simulator":
        return None
    return f"{settings.public_url.rstrip('/')}/webhooks/{settings.provider}/status"
