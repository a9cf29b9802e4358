"""Prometheus metrics: the instruments counted in process, and the gauges read from the database.

What is counted where (the README's "Metrics" section says the same for operators):
- In the process that does the work (counters and histograms, this module's instruments): webhook
  requests (the API process), provider calls (the worker process: its event loop times each call and
  the worker counts it as it records the result), classifier intents (the
  process that recorded the reply). Each process counts its own; with ``PROMETHEUS_MULTIPROC_DIR`` set for
  every process of one machine, /metrics adds them up (prometheus-client's multiprocess mode).
- From the database at scrape time (``DatabaseCollector``): whatever every process shares — messages by
  status and provider, the queue per lane, opt-outs by channel, the review queue, the ledger digest's age.
  Any API process answers them for the whole installation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, and_, func, literal_column, select

from optline.adapters.clock import as_utc
from optline.adapters.db import rollups
from optline.adapters.db.database import Database
from optline.adapters.db.tables import (
    consent_event_counts,
    inbound_messages,
    ledger_digests,
    message_status_counts,
    messages,
)

log = logging.getLogger("optline.metrics")

PROVIDER_CALL_SECONDS = Histogram(
    "optline_provider_call_seconds",
    "Duration of one provider call (send, or the look-up that reconciles an earlier hand-over)",
    ["provider", "outcome"],  # outcome: ok, or the ErrorKind of a refusal
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROVIDER_ERRORS = Counter(
    "optline_provider_errors_total", "Provider calls that failed, by ErrorKind", ["provider", "kind"]
)
WEBHOOK_REQUESTS = Counter(
    "optline_webhook_requests_total",
    "Provider webhooks answered (inbound replies and status callbacks) by outcome",
    ["provider", "kind", "outcome"],  # kind: sms, status; outcome: recorded, duplicate, forbidden, …
)
WEBHOOK_SECONDS = Histogram(
    "optline_webhook_request_seconds",
    "Time from a webhook's body being read to its answer (verify, parse, record, commit)",
    ["provider", "kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INBOUND_INTENTS = Counter(
    "optline_inbound_intents_total", "Inbound replies recorded, by the classifier's intent", ["intent"]
)

LANES = {0: "reply", 1: "bulk"}
# /metrics folds the counts' per-connection rows itself when there are more than this many per key (a worker
# folding every minute keeps them far below; see DatabaseCollector._fold_if_piled_up).
FOLD_SHARDS_PER_KEY = 32  # messages.priority (services/outbox.py REPLY_LANE, BULK_LANE)


@dataclass
class Tally:
    """Rows of ``message_status_counts`` one scrape summed, and the keys they made."""

    rows: int = 0
    keys: int = 0


class DatabaseCollector(Collector):
    """Gauges computed at scrape time, each a read that costs the same however long the history:
    messages by status and provider, and queued per lane, summed from ``message_status_counts``; opt-outs
    by channel from ``consent_event_counts`` (both kept by triggers, adapters/db/rollups.py); the oldest
    queued per lane (one probe each of ``ix_messages_queued_age``), undecided review items
    (``ix_inbound_review``: only the undecided are read), the last digest (``ix_ledger_digests_created``).
    tests/integration/test_metrics_plans.py checks each plan on both engines.
    A database that does not answer gives ``optline_database_up 0`` instead of a failed scrape."""

    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self.db, self.now = db, now

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: collect() would query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("optline_database_up", "Whether the metrics queries reached the database")
        tally = Tally()  # local: two scrapes may run at once
        try:
            with self.db.read() as conn:
                found = list(self._families(conn, self.now(), tally))
        except Exception as exc:
            log.warning("metrics: database queries failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from found
        self._fold_if_piled_up(tally)

    def _fold_if_piled_up(self, tally: Tally) -> None:
        """PostgreSQL writers each add rows of their own to the counts; a worker folds them every minute. With
        no worker running (an API-only deployment, workers stopped for days) nobody would, and every new
        connection's rows would stay: fold them here once they outnumber the keys FOLD_SHARDS_PER_KEY to one.
        Never waits on a writer (rollups.compact skips the rows being written); a failure costs this scrape
        nothing."""
        if self.db.is_sqlite or tally.rows <= FOLD_SHARDS_PER_KEY * max(tally.keys, 1):
            return
        try:
            with self.db.transaction() as conn:
                rollups.compact(conn)
        except Exception as exc:
            log.warning("metrics: folding the counts failed: %s", type(exc).__name__)

    def _families(self, conn: Connection, now: datetime, tally: Tally) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "optline_messages", "Messages in the outbox by status and provider", labels=["status", "provider"]
        )
        per_status: dict[tuple[str, str], int] = {}
        queued = dict.fromkeys(LANES, 0)
        for status, provider, priority, count, rows in conn.execute(
            select(
                message_status_counts.c.status,
                message_status_counts.c.provider,
                message_status_counts.c.priority,
                func.sum(message_status_counts.c.messages),
                func.count(),  # rows summed: one per connection that wrote this key since the last fold
            ).group_by(
                message_status_counts.c.status,
                message_status_counts.c.provider,
                message_status_counts.c.priority,
            )
        ):
            tally.rows, tally.keys = tally.rows + int(rows), tally.keys + 1
            key = (status, provider or "none")  # '' in the counts' key: no provider yet
            per_status[key] = per_status.get(key, 0) + int(count)
            if status == "queued":
                queued[priority] = queued.get(priority, 0) + int(count)
        # A status once seen keeps its series at 0 (compaction keeps shard 0's zero rows).
        for (status, provider), count in sorted(per_status.items()):
            by_status.add_metric([status, provider], count)
        yield by_status

        depth = GaugeMetricFamily(
            "optline_queue_depth", "Messages queued, per priority lane (reply, bulk)", labels=["lane"]
        )
        age = GaugeMetricFamily(
            "optline_queue_oldest_age_seconds",
            "Age of the oldest queued message per lane (0 when the lane is empty)",
            labels=["lane"],
        )
        for priority, lane in LANES.items():
            depth.add_metric([lane], queued.get(priority, 0))
            oldest = conn.execute(_OLDEST_QUEUED[priority]).scalar() if queued.get(priority) else None
            age.add_metric([lane], (now - as_utc(oldest)).total_seconds() if oldest else 0.0)
        yield depth
        yield age

        opt_outs = CounterMetricFamily(
            "optline_opt_outs", "Opt-out events in the consent ledger, by channel", labels=["channel"]
        )
        for channel, count in conn.execute(
            select(consent_event_counts.c.channel, func.sum(consent_event_counts.c.events))
            .where(consent_event_counts.c.action == "opt_out")
            .group_by(consent_event_counts.c.channel)
        ):
            opt_outs.add_metric([channel], int(count))
        yield opt_outs

        review = conn.execute(
            select(func.count()).where(
                and_(inbound_messages.c.review.is_(True), inbound_messages.c.review_decided_at.is_(None))
            )
        ).scalar_one()
        yield GaugeMetricFamily(
            "optline_review_queue_size", "Replies waiting for an operator's decision", value=review
        )

        last = conn.execute(select(func.max(ledger_digests.c.created_at))).scalar()
        # No digest yet: NaN rather than 0, which would read as "just sealed".
        yield GaugeMetricFamily(
            "optline_ledger_digest_age_seconds",
            "Seconds since the last ledger digest (the worker records one every few minutes)",
            value=(now - as_utc(last)).total_seconds() if last else float("nan"),
        )


# The oldest queued message of each lane: literals, not parameters, so that both planners can prove the
# partial index ``ix_messages_queued_age`` (WHERE status = 'queued') applies, and read one entry of it.
_OLDEST_QUEUED = {
    priority: select(func.min(messages.c.created_at)).where(
        messages.c.status == literal_column("'queued'"), messages.c.priority == literal_column(str(priority))
    )
    for priority in LANES
}
