"""Settings from environment variables (prefix ``OPTLINE_``). Nothing is built at import time."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that were published in the code or docs (an older release defaulted to the first): refused in
# production whatever their length.
KNOWN_DEFAULT_SECRETS = frozenset({"dev-insecure-change-me", "changeme", "secret", ""})
MIN_SECRET_LENGTH = 32
# 32 × "a" or "abab…" is long and guessable. Any key from a random generator (hex, base64, a password
# manager) has far more than this many distinct characters; a simple pattern has fewer.
MIN_SECRET_DISTINCT_CHARACTERS = 10


def _json_keys(raw: str) -> list[str]:
    """OPTLINE_PREVIOUS_SECRET_KEYS written as a JSON array. The error never quotes the value (it is secret)."""
    try:
        keys = json.loads(raw)
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            "OPTLINE_PREVIOUS_SECRET_KEYS starts with '[' but is not a JSON array of strings: write "
            '["old key 1", "old key 2"], or the keys separated by commas'
        )
    return keys


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting's error would otherwise quote the input, i.e. every OPTLINE_
    # variable with its secrets (a too-short OPTLINE_SECRET_KEY printed itself at start).
    model_config = SettingsConfigDict(env_prefix="OPTLINE_", extra="ignore", hide_input_in_errors=True)

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///./optline.db"
    # Signs sessions, CSRF tokens and simulator webhooks. Unset outside production: the installation generates
    # a random key on first start and keeps it in its database (bootstrap.Container.secret_key).
    secret_key: SecretStr | None = None
    # Keys OPTLINE_SECRET_KEY had before, comma-separated or a JSON array, newest first: stored secrets encrypted under one of
    # them (adapters/secret_box.py) stay readable after a key change until `optline secrets rotate`
    # re-encrypts them under the current key. Only ever used to decrypt.
    previous_secret_keys: SecretStr | None = None
    default_region: str = "US"
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    provider: Literal["simulator", "twilio", "vonage", "plivo", "telnyx"] = "simulator"

    # Provider credentials and base URLs (base URLs are configurable so tests and staging point anywhere).
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_base_url: str = "https://api.twilio.com"
    twilio_messaging_service_sid: str = ""
    vonage_api_key: str = ""
    vonage_api_secret: SecretStr = SecretStr("")
    vonage_signature_secret: SecretStr = SecretStr("")
    vonage_signature_method: Literal["md5hash", "md5", "sha1", "sha256", "sha512"] = "md5hash"
    vonage_base_url: str = "https://rest.nexmo.com"
    plivo_auth_id: str = ""
    plivo_auth_token: SecretStr = SecretStr("")
    plivo_base_url: str = "https://api.plivo.com"
    telnyx_api_key: SecretStr = SecretStr("")
    telnyx_public_key: str = ""
    telnyx_base_url: str = "https://api.telnyx.com"
    # Dispatch (services/dispatch.py): per-sender messages/second across ALL workers (0: unlimited; a
    # program's settings.rate_per_second overrides), the most one claim takes, how many seconds of calls a
    # batch holds (batches are sized by time), lease.
    send_rate_per_second: float = 0.0
    worker_batch_size: int = 500
    worker_batch_seconds: float = 1.0
    worker_lease_seconds: float = 120.0
    worker_poll_seconds: float = 1.0
    # Provider calls in flight per worker (K). 0: the provider's default (adapters/providers/registry.py:
    # 100 for HTTP providers, enough to saturate a short code at 200 ms per call; 1 for the simulator).
    send_concurrency: int = 0
    # No provider call begins later than this after its send-time consent check committed (seconds).
    send_window_seconds: float = 5.0
    retry_backoff_seconds: float = 2.0
    # Seconds a retry waits after a provider call whose outcome is unknown (a timeout, a lost answer) before
    # it reconciles (looks the message up at the provider), and how much longer a crashed hand-over stays
    # leased. Unset: the configured provider's own value (its send module's Sender.reconcile_after: twilio 30,
    # plivo 60, vonage 300, telnyx 0). One value, not one per provider: an installation sends through one.
    reconcile_after_seconds: float | None = Field(default=None, ge=0)
    # Outbound event webhooks (services/event_hooks.py): the first retry's delay (doubling up to 3 h, for a
    # day) and each request's timeout.
    webhook_retry_base_seconds: float = 30.0
    webhook_timeout_seconds: float = 10.0

    # Request bodies (entrypoints/body_limit.py): refused with 413 before they are read, by Content-Length or
    # by counting what arrives, so a 200 MB POST costs nothing. Webhooks, the API and forms carry kilobytes;
    # the dashboard's contact import takes files of their own limit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)  # the dashboard's own MAX_UPLOAD_BYTES

    # The public sign-up form (/join/<program>): form posts per client IP per 10 minutes (per process), and
    # sign-ups started per client IP per hour (counted in the database, so across processes).
    join_posts_per_ip: int = 20
    join_signups_per_ip_per_hour: int = 5

    # Opt-out analytics and list review (issue 6).
    optout_attribution_days: int = 7  # an opt-out is attributed to the last campaign received within this
    audit_consent_max_age_days: int = 540  # consent older than this, with no engagement since, is stale
    audit_interval_hours: float = 24.0  # how often the worker runs the list review
    review_overdue_hours: float = 24.0  # a review-queue item waiting longer than this is a finding

    # Retention (services/retention.py, run by the worker's housekeeping): status callbacks kept for a
    # message that never matched (pending_receipts) and the rejected rows of finished imports
    # (import_rejects) are deleted after this many days. 0 keeps them for ever. Never the ledger or messages.
    pending_receipts_retention_days: float = Field(default=7.0, ge=0)
    import_rejects_retention_days: float = Field(default=90.0, ge=0)

    # Operations (issue 17). /metrics answers a request bearing this token; unset, only loopback clients
    # (a Prometheus beside the process) — entrypoints/api/metrics.py.
    metrics_token: SecretStr | None = None
    # One JSON object per log line, or plain text; unset: text in development, JSON elsewhere (logs.py).
    log_format: Literal["json", "text"] | None = None
    # Signed ledger checkpoints (issue 16; adapters/ledger_signing.py, services/checkpoints.py). The key
    # (a 32-byte Ed25519 seed, hex or base64) lives outside the database: in the environment or a key file.
    # Unset in development/test on SQLite, both default to files beside the database file and the key is
    # generated on first use; production refuses to sign without a key that already exists.
    ledger_signing_key: SecretStr | None = None
    ledger_signing_key_file: str | None = None
    # Where every checkpoint is appended: a file path (keep it on other storage) or an http(s) URL that
    # receives each checkpoint as a JSON POST.
    ledger_checkpoint_log: str | None = None
    ledger_checkpoint_minutes: float = 60.0  # how often a worker writes a checkpoint (when the ledger moved)

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        if self.env != "production":
            return self
        key = self.secret_key.get_secret_value() if self.secret_key is not None else ""
        if key in KNOWN_DEFAULT_SECRETS:
            raise ValueError(
                "OPTLINE_SECRET_KEY is unset or a published default; production needs an explicit random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if len(key) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"OPTLINE_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters in production"
            )
        if len(set(key)) < MIN_SECRET_DISTINCT_CHARACTERS:
            raise ValueError(
                f"OPTLINE_SECRET_KEY has only {len(set(key))} distinct characters: too easy to guess, use a "
                f"random value (at least {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters)"
            )
        return self

    def previous_secret_key_values(self) -> list[str]:
        """OPTLINE_PREVIOUS_SECRET_KEYS as a list (blank entries ignored): comma-separated, or a JSON array
        of strings. Why both: a key chosen by hand may contain a comma, and it must still be listable here to
        be rotated out (split on commas, it would become two keys that decrypt nothing)."""
        raw = self.previous_secret_keys.get_secret_value() if self.previous_secret_keys else ""
        if raw.lstrip().startswith("["):
            return [k.strip() for k in _json_keys(raw) if k.strip()]
        return [k.strip() for k in raw.split(",") if k.strip()]

    @field_validator("previous_secret_keys")
    @classmethod
    def _previous_keys_readable(cls, keys: SecretStr | None) -> SecretStr | None:
        raw = keys.get_secret_value() if keys is not None else ""
        if raw.lstrip().startswith("["):
            _json_keys(raw)  # refused at start, not at the first decryption
        return keys

    @field_validator("pending_receipts_retention_days", "import_rejects_retention_days")
    @classmethod
    def _whole_days(cls, days: float, info: ValidationInfo) -> float:
        # Shorter than a day could delete a receipt before dispatch records its message's id (a lease plus
        # reconcile_after: minutes), or rejected rows while an operator is still reading them.
        if 0 < days < 1:
            raise ValueError(
                f"OPTLINE_{(info.field_name or '').upper()} must be 0 (keep for ever) or at least 1"
            )
        return days

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        from optline.adapters.db.database import normalise_url

        return normalise_url(url)

    def public_url_when_serving(self, host: str, port: int) -> tuple[str, str | None]:
        """The public URL for a server bound to ``host:port``, and a warning when links would be dead.

        Opt-out links, the join form and webhook signatures are built from the public URL. Left unset outside
        production, it follows the address actually served (``serve --port 8001`` must not print links to
        8000); set explicitly to a loopback address on another port, it is kept (the operator may run a
        proxy there) but named in a warning. A real host name is never second-guessed."""
        served = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        if "public_url" not in self.model_fields_set:
            if self.env == "production":
                return self.public_url, (
                    f"OPTLINE_PUBLIC_URL is not set: opt-out links and webhook URLs would point at "
                    f"{self.public_url}; set it to the address recipients and providers reach"
                )
            return served, None
        configured = urlsplit(self.public_url)
        loopback = (configured.hostname or "") in ("127.0.0.1", "localhost", "::1", "0.0.0.0")
        if loopback and (configured.port or (443 if configured.scheme == "https" else 80)) != port:
            return self.public_url, (
                f"OPTLINE_PUBLIC_URL is {self.public_url} but this server listens on {served}: opt-out "
                f"links and webhook signatures use {self.public_url} (set OPTLINE_PUBLIC_URL={served} unless "
                "a proxy answers there)"
            )
        return self.public_url, None

    @property
    def uses_simulator(self) -> bool:
        """The simulator's webhooks and the dashboard's "reply as a contact" exist only then: with a real
        provider they would let anyone holding the secret key (or any operator) record a reply "from" a
        person, which only the person may send (invariants 4 and 6)."""
        return self.provider == "simulator"

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "text" if self.env == "development" else "json"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
