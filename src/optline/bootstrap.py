"""The composition root: the one place that wires settings, engine, clock and providers together."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optline.adapters.clock import Clock, SystemClock
from optline.adapters.db.database import Database, make_engine, migrate
from optline.config import Settings, get_settings

if TYPE_CHECKING:
    from optline.adapters.secret_box import SecretBox


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    # Filled by later wiring (providers, signer …); keyed by name so tests can swap one part.
    extras: dict[str, Any] = field(default_factory=dict)

    def secret_key(self) -> str:
        """The key that signs sessions, CSRF tokens and simulator webhooks: OPTLINE_SECRET_KEY when set (always
        in production), else one generated on first use and kept in the installation's database, so that no
        two installations share a key and every process of one installation uses the same."""
        explicit = self.settings.secret_key.get_secret_value() if self.settings.secret_key else ""
        if explicit:  # (an empty OPTLINE_SECRET_KEY= counts as unset, never as a key)
            return explicit
        if "secret_key" not in self.extras:
            from optline.adapters.db import installation

            # A read first: the write transaction (SQLite's write lock) is taken only on the very first start.
            with self.db.read() as conn:
                key = installation.get(conn, "secret_key")
            if key is None:
                with self.db.transaction() as conn:
                    key = installation.get_or_create(
                        conn, "secret_key", lambda: secrets.token_urlsafe(48), self.clock.now()
                    )
            self.extras["secret_key"] = key
        return str(self.extras["secret_key"])

    def secret_box(self) -> SecretBox:
        """Encrypts the secrets kept in the database (adapters/secret_box.py) under a key derived from
        ``secret_key()``; the previous keys of OPTLINE_PREVIOUS_SECRET_KEYS still decrypt."""
        if "secret_box" not in self.extras:
            from optline.adapters.secret_box import SecretBox

            previous = self.settings.previous_secret_key_values()
            if self.settings.secret_key and self.settings.secret_key.get_secret_value():
                # An installation that ran on its generated key and was then given OPTLINE_SECRET_KEY: what it
                # stored under the generated key stays readable (until `optline secrets rotate`).
                from optline.adapters.db import installation

                with self.db.read() as conn:
                    generated = installation.get(conn, "secret_key")
                if generated is not None:
                    previous.append(generated)
            self.extras["secret_box"] = SecretBox(self.secret_key(), previous)
        box: SecretBox = self.extras["secret_box"]
        return box

    def close(self) -> None:
        self.db.dispose()


def build(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate_db: bool = False
) -> Container:
    settings = settings or get_settings()
    db = Database(make_engine(settings.database_url))
    if migrate_db:
        migrate(db.engine)
    return Container(settings=settings, db=db, clock=clock or SystemClock())


def sender(container: Container) -> Any:
    """The configured provider's Sender, built once per container (tests put their own in extras)."""
    if "sender" not in container.extras:
        from optline.adapters.providers.registry import build_sender

        if container.settings.provider == "simulator":
            container.extras["sender"] = _simulator_with_receipts(container)
        else:
            container.extras["sender"] = build_sender(container.settings, container.db, container.clock)
    return container.extras["sender"]


def _simulator_with_receipts(container: Container) -> Any:
    """The simulator posts a delivery receipt for every message, through the receipts use case the status
    webhooks run (so simulator campaigns reach "delivered" like real ones), in the transaction that stores
    the message."""
    from optline.adapters.providers.simulator.send import SimulatorSender
    from optline.services import receipts

    def post(conn: Any, update: Any) -> None:
        receipts.record_status(conn, container.clock, update)

    return SimulatorSender(container.db, container.clock, receipts=post)
