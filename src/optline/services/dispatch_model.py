"""What the parts of dispatch share: its settings, its counts, a checked message, a batch in flight."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from optline.domain import retry
from optline.services.handover import Handover, Run

# What the check, quiet hours and composition read of a contact.
PERSON_COLUMNS = ("id", "phone", "region", "time_zone", "us_state", "locale", "attributes")
# The longest a provider call can take (http_errors.DEFAULT_TIMEOUT) plus slack: no call starts later
# than this before the lease ends.
SEND_MARGIN = 12.0
# Results are stored as their calls return, in writes at most this far apart (a receipt may arrive before
# the batch ends; one that still arrives first is kept and applied when the id is stored).
STREAM_INTERVAL = 0.1
# Messages per write transaction of a worker while webhooks wait for the same write lock (SQLite, ``serve``'s
# in-process worker): a claim, a check or a store of a few messages holds the lock for a few milliseconds,
# where a batch of 500 confirmations held it for 100-200 (the STOPs behind it waited that long).
YIELD_BATCH = 8


class WebhookWrites(Protocol):
    """The webhooks' writes beside this worker in its process (adapters/db/group_commit.py ``Beside``)."""

    def waiting(self) -> int:
        """Units waiting for their transaction."""
        ...

    def give_way(self) -> None:
        """Wait, boundedly, for the units already waiting to commit."""
        ...


@dataclass
class DispatchConfig:
    batch_size: int = 500  # the most one claim takes; batches are sized by time (batch_seconds) below it
    batch_seconds: float = 1.0  # a batch holds about this many seconds of calls at the measured rate
    concurrency: int = 16  # provider calls in flight per worker (K; per provider in settings)
    lease: timedelta = timedelta(seconds=120)
    max_attempts: int = 8
    backoff_base: float = 2.0  # seconds; attempt n waits base * 2**(n-1), capped
    backoff_max: float = 3600.0
    rate_per_second: float | None = None  # per sender number, across all workers; program setting overrides
    # THE BOUND: no call begins later than this after its check committed; also how far ahead a batch
    # reserves its senders' slots (what cannot start within it goes back to the queue unchecked).
    send_window: float = 5.0
    public_url: str = "http://127.0.0.1:8000"
    status_callback_url: str | None = None

    @property
    def policy(self) -> retry.RetryPolicy:
        return retry.RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max, self.backoff_max / 6)


@dataclass
class Counts:
    claimed: int = 0
    sent: int = 0
    suppressed: int = 0
    deferred: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # writes whose guard failed: the row was no longer ours (cancelled, reclaimed): not sent

    def add(self, other: Counts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ToSend:
    row: Mapping[str, Any]
    handover: Handover
    attempts: int
    opted_out_program: Mapping[str, Any] | None = field(default=None)


@dataclass
class Batch:
    claimed: list[dict[str, Any]]
    to_send: list[ToSend]
    run: Run
    counts: Counts
    recorded: set[int] = field(default_factory=set)  # message ids whose outcome is already stored

    @property
    def campaign_ids(self) -> set[int]:
        return {m["campaign_id"] for m in self.claimed if m["campaign_id"]}

    @property
    def done(self) -> bool:
        return len(self.recorded) == len(self.to_send)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def rate_key(m: Mapping[str, Any], program: Mapping[str, Any] | None) -> str:
    """The number a message goes out from: rate limits and provider pauses are per sender."""
    program = program or {}
    number = (
        m["from_phone"] or next(iter(program.get("sender_numbers") or []), None) or program.get("short_code")
    )
    return str(number or "-")
