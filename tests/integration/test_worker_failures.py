"""A worker whose batches fail (the database is restarting) keeps going: it waits longer after each failure
(at most a few seconds), logs the traceback once and then one line per try, and says when it recovered."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy.exc import OperationalError

from optline.bootstrap import Container
from optline.entrypoints import worker
from optline.services.dispatch import Counts


class _Flaky:
    """A dispatcher whose first ``failures`` batches fail as a dropped database connection does."""

    def __init__(self, failures: int) -> None:
        self.left = failures

    def run_once(self) -> Counts:
        if self.left:
            self.left -= 1
            raise OperationalError("SELECT …", {}, Exception("server closed the connection unexpectedly"))
        return Counts()

    def close(self) -> Counts:
        return Counts()


class _Stop(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return False


def test_backoff_doubles_from_the_poll_interval_up_to_a_bound() -> None:
    waits = [worker.failure_backoff(0.2, n) for n in range(1, 8)]
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert worker.failure_backoff(10.0, 3) == 10.0  # never shorter than the poll interval


def test_a_failing_worker_backs_off_logs_one_traceback_and_recovers(
    container: Container, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    container.settings.worker_poll_seconds = 0.2
    monkeypatch.setattr(worker, "dispatcher_for", lambda c, worker_id=None: _Flaky(4))
    stop = _Stop()
    with caplog.at_level(logging.INFO, logger="optline.worker"):
        worker.run(container, stop, once=True)
    assert stop.waits[:4] == [0.2, 0.4, 0.8, 1.6]
    mine = [r for r in caplog.records if r.name == "optline.worker" and "dispatch" in r.getMessage()]
    assert [r.exc_info is not None for r in mine[:4]] == [True, False, False, False]
    assert "still failing (4 tries): OperationalError" in mine[3].getMessage()
    assert mine[4].getMessage() == "dispatch recovered after 4 failed tries"
