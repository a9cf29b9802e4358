"""SIGTERM to real processes, on SQLite and PostgreSQL: ``optline serve`` answers the request in flight (and
stops its in-process worker) before it exits 0; ``optline worker`` finishes the batch it holds — every
message the provider accepted is recorded ``sent``, nothing is left claimed or sending — and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from optline.adapters.db.tables import messages, subscriptions
from optline.bootstrap import Container
from optline.services import campaigns
from tests.support import fake_providers as fp
from tests.support import outbound, signing
from tests.support.server import serve

OPTLINE = str(Path(sys.executable).with_name("optline"))
SENDER = "+14155550100"


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes the server has not read yet on its end of this connection (Linux ``/proc/net/tcp``), None
    until the server's end is listed."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].split(":")[1], 16)  # tx_queue:rx_queue
    return None


def test_serve_answers_the_request_in_flight_then_exits_0(live: Container) -> None:
    _program, ids = outbound.seed(live, 1)
    person = outbound.phone(0)
    env = {"OPTLINE_TWILIO_AUTH_TOKEN": signing.TWILIO_TOKEN}
    with serve(live.settings.database_url, **env) as server:
        fx = signing.inbound_fixture("twilio", sid="SMinflight", from_=person, to=SENDER, body="STOP")
        signed = signing.sign("twilio", fx, server.url)
        host, port = server.url.removeprefix("http://").split(":")
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        request = (
            f"POST {signed.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
            f"Content-Length: {len(signed.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            half = len(signed.body) // 2
            conn.sendall(request + signed.body[:half])
            # The app is running, waiting for the rest, once the server has read what was sent (it parses the
            # head and starts the request in the same step): no sleep that a loaded machine could outlast.
            wait_for(lambda: unread_by_server(int(port), conn.getsockname()[1]) == 0)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert server.process.poll() is None, "exited with a request in flight"
            conn.sendall(signed.body[half:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert server.process.wait(timeout=60) == 0, "".join(server.output)
    with live.db.read() as conn:
        status = conn.execute(select(subscriptions.c.status).where(subscriptions.c.contact_id == ids[0]))
        assert status.scalar_one() == "unsubscribed"
    log = "".join(server.output)
    assert "Finished server process" in log
    if live.settings.is_sqlite:
        assert "worker     in-process" in log  # … and it was stopped and joined before the exit


def test_worker_finishes_its_batch_on_sigterm_then_exits_0(
    live: Container, fake_server: fp.RemoteFake
) -> None:
    outbound.seed(live, 60, time_zone=outbound.zone_where(True), us_state=None)
    with live.db.transaction() as conn:
        campaign = campaigns.create(conn, live.clock, program="deals", name="c1", template="Hi, 20% off")
        campaigns.start(conn, live.clock, campaign, public_url=live.settings.public_url)
    fake_server.client.post("/_fake/latency", json={"seconds": 0.15}).raise_for_status()  # ~1.5 s a batch
    env = {**os.environ, "OPTLINE_DATABASE_URL": live.settings.database_url, "OPTLINE_ENV": "test",
           "OPTLINE_PROVIDER": "twilio", "OPTLINE_TWILIO_ACCOUNT_SID": fp.TWILIO_SID,
           "OPTLINE_TWILIO_AUTH_TOKEN": fp.TWILIO_TOKEN, "OPTLINE_TWILIO_BASE_URL": fake_server.url,
           "OPTLINE_WORKER_BATCH_SIZE": "10", "OPTLINE_WORKER_POLL_SECONDS": "0.2",
           "OPTLINE_PUBLIC_URL": "https://acme.test", "COLUMNS": "200"}  # fmt: skip
    proc = subprocess.Popen(
        [OPTLINE, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: len(fake_server.received) >= 3)  # mid-batch
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err

    received = fake_server.received
    with live.db.read() as conn:
        rows = conn.execute(select(messages.c.status, func.count()).group_by(messages.c.status)).all()
        sent_ids = set(
            conn.execute(select(messages.c.provider_message_id).where(messages.c.status == "sent")).scalars()
        )
    statuses = dict(rows)
    assert "sending" not in statuses and "claimed" not in statuses, statuses
    # Every call the provider accepted is recorded with its id; the rest wait in the queue for the next worker.
    assert sent_ids == {m["sid"] for m in received}
    assert statuses["sent"] >= 10, "the batch in hand was not finished"
    assert statuses["sent"] + statuses.get("queued", 0) == 60
    assert statuses.get("queued", 0) > 0, "SIGTERM did not stop the worker before the queue ran out"
    assert f"sent {statuses['sent']}," in out
