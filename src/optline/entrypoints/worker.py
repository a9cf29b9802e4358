"""The dispatch worker: ``optline worker`` (its command is in entrypoints/cli/server.py; any number, on
PostgreSQL) or a thread inside ``optline serve`` (SQLite: one in-process worker). Also records the ledger
digest periodically, and writes a signed ledger checkpoint every OPTLINE_LEDGER_CHECKPOINT_MINUTES when a
checkpoint log is configured (services.checkpoints).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import httpx

from optline.adapters import ledger_signing
from optline.adapters.db import group_commit, ledger, rollups
from optline.bootstrap import Container, sender
from optline.services import event_hooks
from optline.services.dispatch import Counts, DispatchConfig, Dispatcher

log = logging.getLogger("optline.worker")
DIGEST_EVERY_SECONDS = 300.0
HOUSEKEEPING_EVERY_SECONDS = 60.0
# The retention purges (services/retention.py) work in days: once an hour is plenty, and the first loop runs
# them so a worker restarted often still purges.
RETENTION_EVERY_SECONDS = 3600.0
RETENTION_LEASE = "retention"  # adapters/db/leases.py: one worker purges at a time


def dispatcher_for(container: Container, worker_id: str | None = None) -> Dispatcher:
    from optline.adapters.providers.registry import concurrency, status_callback_url

    s = container.settings
    config = DispatchConfig(
        batch_size=s.worker_batch_size,
        batch_seconds=s.worker_batch_seconds,
        concurrency=concurrency(s),
        lease=timedelta(seconds=s.worker_lease_seconds),
        backoff_base=s.retry_backoff_seconds,
        rate_per_second=s.send_rate_per_second or None,
        send_window=s.send_window_seconds,
        public_url=s.public_url,
        status_callback_url=status_callback_url(s),
    )
    # In ``serve`` on SQLite the webhooks' group commit shares this process and the one write lock: the
    # worker lets their waiting units commit first, and writes a few messages at a time while they wait.
    webhooks = group_commit.of(container.db)
    return Dispatcher(container.db, container.clock, sender(container), config, worker_id, webhooks)


def run(
    container: Container,
    stop: threading.Event,
    *,
    once: bool = False,
    on_batch: Callable[[Counts], None] | None = None,
    digest_every: float = DIGEST_EVERY_SECONDS,
) -> Counts:
    """Dispatch until ``stop`` is set (``once``: until the queue has nothing due). Returns the totals."""
    dispatcher = dispatcher_for(container)
    total = Counts()
    last_digest = -digest_every  # the first loop seals what happened while no worker ran
    last_housekeeping = -HOUSEKEEPING_EVERY_SECONDS  # first loop
    last_retention = -RETENTION_EVERY_SECONDS  # first loop
    checkpoint_every = container.settings.ledger_checkpoint_minutes * 60
    last_checkpoint = -checkpoint_every  # first loop: a worker restarted often still writes checkpoints
    poll = container.settings.worker_poll_seconds
    hooks = _Hooks(container)
    hooks.start()
    failing = Failures("dispatch", poll)
    while not stop.is_set():
        try:
            counts = dispatcher.run_once()
        except Exception as exc:  # a database or provider hiccup must not end the worker; logged, not hidden
            stop.wait(failing.failed(exc))
            continue
        failing.succeeded()
        total.add(counts)
        if on_batch:
            on_batch(counts)
        if time.monotonic() - last_digest >= digest_every:
            last_digest = time.monotonic()
            _record_digest(container)
        if time.monotonic() - last_checkpoint >= checkpoint_every:
            last_checkpoint = time.monotonic()
            _write_checkpoint(container)
        if time.monotonic() - last_housekeeping >= HOUSEKEEPING_EVERY_SECONDS:
            last_housekeeping = time.monotonic()
            try:  # opt-out roll-up for the report, and the list review when it is due (services.audit)
                from optline.services.audit import run_scheduled_audit

                run_scheduled_audit(container)
            except Exception:
                log.exception("scheduled opt-out roll-up / list review failed")
            try:  # fold the scrape counts' per-connection rows (adapters/db/rollups.py), so /metrics reads few
                if not container.db.is_sqlite:  # one row per key there: no write lock taken for nothing
                    with container.db.transaction() as conn:
                        rollups.compact(conn)
            except Exception:
                log.exception("folding the metrics counts failed")
            try:  # close double opt-ins whose confirmation window has passed (nothing is sent to them)
                from optline.services.signup import expire_due

                with container.db.transaction() as conn:
                    expire_due(conn, container.clock)
            except Exception:
                log.exception("expiring unconfirmed sign-ups failed")
        if time.monotonic() - last_retention >= RETENTION_EVERY_SECONDS:
            last_retention = time.monotonic()
            purge_expired(container)
        if counts.claimed == 0:
            if once:
                break
            stop.wait(poll)
    total.add(dispatcher.close())
    hooks.close()
    _record_digest(container)  # what this worker (and, in `serve`, the API beside it) changed since the last
    return total


MAX_FAILURE_BACKOFF_SECONDS = 5.0


def failure_backoff(poll: float, failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed batch in a row: the poll interval, doubling, at most
    ``MAX_FAILURE_BACKOFF_SECONDS`` (a database restart is over in seconds; the wait after it stays short)."""
    return min(max(poll, MAX_FAILURE_BACKOFF_SECONDS), poll * 2 ** (failures - 1))


class Failures:
    """Failed batches in a row of one loop (dispatch, webhook delivery): how long to wait before the next
    try, and the log of an outage as a person wants to read it — the traceback once, then one line per try,
    then that it recovered (not a traceback every poll)."""

    def __init__(self, what: str, poll: float) -> None:
        self.what, self.poll, self.count = what, poll, 0

    def failed(self, exc: Exception) -> float:
        self.count += 1
        delay = failure_backoff(self.poll, self.count)
        if self.count == 1:
            log.exception("%s batch failed; retrying in %.1fs", self.what, delay)
        else:
            first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
            log.warning(
                "%s still failing (%d tries): %s: %s; retrying in %.1fs",
                self.what,
                self.count,
                type(exc).__name__,
                first_line,
                delay,
            )
        return delay

    def succeeded(self) -> None:
        if self.count:
            log.info("%s recovered after %d failed tries", self.what, self.count)
            self.count = 0


class _Hooks:
    """The outbound event webhook deliverer (services/event_hooks.py), in a thread of its own beside
    dispatch: an endpoint that is slow or down costs its timeout here, never a text's turn in the queue."""

    def __init__(self, container: Container) -> None:
        s = container.settings
        self.container = container
        self.poll = s.worker_poll_seconds
        self.config = event_hooks.DelivererConfig(
            retry_base=timedelta(seconds=s.webhook_retry_base_seconds), timeout=s.webhook_timeout_seconds
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="optline-webhooks", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        # No redirects: a signed event goes to the registered URL or nowhere.
        with httpx.Client(follow_redirects=False) as client:
            failing = Failures("webhook delivery", self.poll)
            while not self.stop.is_set():
                try:
                    counts = event_hooks.deliver_due(
                        self.container.db,
                        self.container.clock,
                        client,
                        self.config,
                        self.container.secret_box(),
                        stop=self.stop,
                    )
                except Exception as exc:  # like dispatch: logged, retried, never the end of the worker
                    self.stop.wait(failing.failed(exc))
                    continue
                failing.succeeded()
                if counts.attempted < self.config.batch_size:  # a full batch: more may be due at once
                    self.stop.wait(self.poll)

    def close(self) -> None:
        """Finish the request in flight; claimed deliveries not yet sent fall due again after their lease."""
        self.stop.set()
        self.thread.join()


def purge_expired(container: Container, holder: str | None = None) -> bool:
    """Delete pending receipts and import rejects past their retention (counted in the log by the purge),
    unless another worker holds the retention lease: one purge per RETENTION_EVERY_SECONDS for the whole
    installation, not one per worker. The lease lasts that long, so a worker that dies holding it (or
    takes longer) delays the next purge by at most one interval; then whichever worker asks takes it over.
    Returns whether this process ran the purge."""
    from optline.adapters.db import leases
    from optline.services import retention
    from optline.services.dispatch_model import default_worker_id

    s = container.settings
    try:
        with container.db.transaction() as conn:
            mine = leases.take(
                conn,
                RETENTION_LEASE,
                holder or default_worker_id(),
                container.clock.now(),
                timedelta(seconds=RETENTION_EVERY_SECONDS),
            )
        if not mine:
            return False
        retention.purge(
            container.db,
            container.clock,
            pending_receipts_days=s.pending_receipts_retention_days,
            import_rejects_days=s.import_rejects_retention_days,
        )
    except Exception:  # the next interval retries; dispatch must not stop for it
        log.exception("the retention purge (pending receipts, import rejects) failed")
        return False
    return True


def _record_digest(container: Container) -> None:
    """Digest the chain heads that moved (every few minutes, not per event: appends never wait on it)."""
    try:
        with container.db.transaction() as conn:
            ledger.record_digest(conn, container.clock.now())
    except Exception:  # the next tick retries; dispatch must not stop for it
        log.exception("recording the ledger digest failed")


def _write_checkpoint(container: Container) -> None:
    """A signed checkpoint when the ledger moved since the last one; none without a checkpoint log."""
    if ledger_signing.checkpoint_log(container.settings) is None:
        return  # PostgreSQL outside production with no log configured; production refuses to start so
    from optline.services import checkpoints

    try:
        checkpoints.take(container, only_if_moved=True)
    except Exception:  # the next interval retries; dispatch must not stop for it
        log.exception("writing the signed ledger checkpoint failed")


def start_thread(container: Container) -> tuple[threading.Thread, threading.Event]:
    """The in-process worker of ``optline serve`` on SQLite."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(container, stop), name="optline-worker", daemon=True)
    thread.start()
    return thread, stop


def require_checkpoint_configuration(c: Container) -> None:
    """Production runs no worker that cannot sign checkpoints: a key and a log must exist before it starts."""
    if c.settings.env != "production":
        return
    from optline.entrypoints.cli.common import fail

    try:
        ledger_signing.signing_key(c.settings, create=False)
    except ledger_signing.SigningKeyError as exc:
        fail(str(exc))
    if ledger_signing.checkpoint_log(c.settings) is None:
        fail("set OPTLINE_LEDGER_CHECKPOINT_LOG (a file on other storage or an http(s) URL) in production")
