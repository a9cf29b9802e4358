"""The composition root: the one place that wires settings, engine, clock and providers together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optline.adapters.clock import Clock, SystemClock
from optline.adapters.db.database import Database, make_engine, migrate
from optline.config import Settings, get_settings


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    # Filled by later wiring (providers, signer …); keyed by name so tests can swap one part.
    extras: dict[str, Any] = field(default_factory=dict)

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

        container.extras["sender"] = build_sender(container.settings, container.db, container.clock)
    return container.extras["sender"]
