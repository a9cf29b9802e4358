"""Wiring: the configured provider's Sender (the one place that reads provider settings)."""

from __future__ import annotations

import logging

from optline.adapters.clock import Clock, SystemClock
from optline.adapters.db.database import Database
from optline.adapters.providers.base import Sender
from optline.config import Settings

log = logging.getLogger("optline.providers")


def build_sender(settings: Settings, db: Database, clock: Clock | None = None) -> Sender:
    if settings.provider == "simulator":
        from optline.adapters.providers.simulator.send import SimulatorSender

        return SimulatorSender(db, clock or SystemClock())
    return http_sender(settings)


# Provider calls in flight per worker (K) when OPTLINE_SEND_CONCURRENCY is unset. HTTP providers: 100,
# which saturates a short code (100 messages/s at Twilio and AWS) at 200 ms per call and 10DLC/toll-free
# limits with room; a provider's own API limit (per account) is enforced by its 429s, which pause the
# sender (services/sender_limits.py). The simulator writes to the database in-process: one at a time.
DEFAULT_CONCURRENCY = {"simulator": 1, "twilio": 100, "vonage": 100, "plivo": 100, "telnyx": 100}


def concurrency(settings: Settings) -> int:
    return settings.send_concurrency or DEFAULT_CONCURRENCY.get(settings.provider, 16)


# Where the provider itself documents how long a message it accepted may take to show in the lookup that
# reconciliation uses, an OPTLINE_RECONCILE_AFTER_SECONDS below it is named in a warning (not refused: the
# operator may know better, e.g. a regional API). Twilio's 30 s and Plivo's 60 s are our own margins over an
# undocumented delay, so nothing is claimed for them; Telnyx reconciles by resending with the same
# Idempotency-Key, so any wait is safe.
DOCUMENTED_LOOKUP_DELAY = {
    # "a few minutes": https://developer.vonage.com/en/dashboard/monitor/logs/messages-logs
    "vonage": (300.0, "Vonage documents that its message records appear 'a few minutes' after sending"),
}


def reconcile_after(settings: Settings) -> float | None:
    """OPTLINE_RECONCILE_AFTER_SECONDS for the configured provider (None: the provider's own default), with
    a warning when it is shorter than the provider documents its lookup to need."""
    value = settings.reconcile_after_seconds
    documented = DOCUMENTED_LOOKUP_DELAY.get(settings.provider)
    if value is not None and documented is not None and value < documented[0]:
        log.warning(
            "OPTLINE_RECONCILE_AFTER_SECONDS=%s is below %s s: %s, and a retry that looks earlier may not find "
            "a message the provider accepted and send it twice",
            value,
            documented[0],
            documented[1],
        )
    return value


def http_sender(settings: Settings) -> Sender:
    """The Sender of an HTTP provider: needs nothing but its settings."""
    name = settings.provider
    wait = reconcile_after(settings)
    if name == "twilio":
        from optline.adapters.providers.twilio.send import TwilioSender

        sid, token = settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()
        return TwilioSender(
            sid, token, settings.twilio_base_url, settings.twilio_messaging_service_sid, reconcile_after=wait
        )
    if name == "vonage":
        from optline.adapters.providers.vonage.send import VonageSender

        return VonageSender(
            settings.vonage_api_key,
            settings.vonage_api_secret.get_secret_value(),
            settings.vonage_base_url,
            reconcile_after=wait,
        )
    if name == "plivo":
        from optline.adapters.providers.plivo.send import PlivoSender

        auth_id, token = settings.plivo_auth_id, settings.plivo_auth_token.get_secret_value()
        return PlivoSender(auth_id, token, settings.plivo_base_url, reconcile_after=wait)
    if name == "telnyx":
        from optline.adapters.providers.telnyx.send import TelnyxSender

        key = settings.telnyx_api_key.get_secret_value()
        return TelnyxSender(key, settings.telnyx_base_url, reconcile_after=wait)
    raise ValueError(
        f"unknown provider {name!r} (OPTLINE_PROVIDER: simulator, twilio, vonage, plivo, telnyx)"
    )


def status_callback_url(settings: Settings) -> str | None:
    """Where the provider posts delivery status (served by the inbound webhooks); None for the simulator."""
    if settings.provider == "simulator":
        return None
    return f"{settings.public_url.rstrip('/')}/webhooks/{settings.provider}/status"
