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
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, and_, func, select

from optline.adapters.clock import as_utc
from optline.adapters.db.database import Database
from optline.adapters.db.tables import consent_events, inbound_messages, ledger_digests, messages

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

LANES = {0: "reply", 1: "bulk"}  # messages.priority (services/outbox.py REPLY_LANE, BULK_LANE)


class DatabaseCollector(Collector):
    """Gauges computed at scrape time, each with one aggregate query over an index:
    messages by status (``ix_messages_claim`` leads with status), queued per lane, opt-out events
    (``ix_consent_events_action_time``), undecided review items (``ix_inbound_review``), the last digest.
    A database that does not answer gives ``optline_database_up 0`` instead of a failed scrape."""

    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self.db, self.now = db, now

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: collect() would query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("optline_database_up", "Whether the metrics queries reached the database")
        try:
            with self.db.read() as conn:
                found = list(self._families(conn, self.now()))
        except Exception as exc:
            log.warning("metrics: database queries failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from found

    def _families(self, conn: Connection, now: datetime) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "optline_messages", "Messages in the outbox by status and provider", labels=["status", "provider"]
        )
        rows = conn.execute(
            select(messages.c.status, messages.c.provider, func.count()).group_by(
                messages.c.status, messages.c.provider
            )
        )
        for status, provider, count in rows:
            by_status.add_metric([status, provider or "none"], count)
        yield by_status

        depth = GaugeMetricFamily(
            "optline_queue_depth", "Messages queued, per priority lane (reply, bulk)", labels=["lane"]
        )
        age = GaugeMetricFamily(
            "optline_queue_oldest_age_seconds",
            "Age of the oldest queued message per lane (0 when the lane is empty)",
            labels=["lane"],
        )
        queued = {
            priority: (count, oldest)
            for priority, count, oldest in conn.execute(
                select(messages.c.priority, func.count(), func.min(messages.c.created_at))
                .where(messages.c.status == "queued")
                .group_by(messages.c.priority)
            )
        }
        for priority, lane in LANES.items():
            count, oldest = queued.get(priority, (0, None))
            depth.add_metric([lane], count)
            age.add_metric([lane], (now - as_utc(oldest)).total_seconds() if oldest else 0.0)
        yield depth
        yield age

        opt_outs = CounterMetricFamily(
            "optline_opt_outs", "Opt-out events in the consent ledger, by channel", labels=["channel"]
        )
        for channel, count in conn.execute(
            select(consent_events.c.channel, func.count())
            .where(consent_events.c.action == "opt_out")
            .group_by(consent_events.c.channel)
        ):
            opt_outs.add_metric([channel], count)
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
