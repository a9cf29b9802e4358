"""Webhook signing secrets encrypted at rest, on both engines: the column never holds the secret, deliveries
still verify at a real receiver (with the `standardwebhooks` package), a key change with the old key listed
keeps them readable, `optline secrets rotate` re-encrypts (and encrypts legacy clear values), and a wrong
key is a clear error that neither sends nor loses the delivery."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from standardwebhooks.webhooks import Webhook

from optline.adapters.clock import FrozenClock
from optline.adapters.db.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from optline.bootstrap import Container, build
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.services import consent, event_hooks
from optline.services.event_hooks import DelivererConfig
from tests.support import web
from tests.support.hook_receiver import Receiver

OLD_KEY = "old-secret-key-0123456789-abcdefghijklmnop"
NEW_KEY = "new-secret-key-9876543210-qrstuvwxyzABCDEF"
OTHER_KEY = "another-key-nobody-listed-0123456789-zyxwv"
CONFIG = DelivererConfig(timeout=5.0)
OPTLINE = str(Path(sys.executable).parent / "optline")


@pytest.fixture
def clock() -> FrozenClock:
    # Real time: the standardwebhooks verifier refuses timestamps more than five minutes from its own clock.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def container_with(db_url: str, clock: FrozenClock, key: str, previous: str | None = None) -> Container:
    settings = Settings(env="test", database_url=db_url, secret_key=key, previous_secret_keys=previous)
    return build(settings, clock=clock)


@pytest.fixture
def old(db_url: str, clock: FrozenClock) -> Iterator[Container]:
    c = container_with(db_url, clock, OLD_KEY)
    yield c
    c.close()


def register(c: Container, url: str) -> event_hooks.CreatedEndpoint:
    box = c.secret_box()  # outside the transaction: with no OPTLINE_SECRET_KEY it may write the generated one
    with c.db.transaction() as conn:
        return event_hooks.create_endpoint(conn, c.clock, box, url=url, events=["opt_out"], development=True)


def opt_out(c: Container, phone: str = "+14155550134") -> None:
    program = web.program(c, name=f"p{phone[-4:]}", optout_scope="program")
    person = web.subscriber(c, program, phone)
    with c.db.transaction() as conn:
        consent.record(
            conn,
            c.clock,
            contact_id=person["id"],
            program=program,
            action=Action.OPT_OUT,
            channel=Channel.API,
            evidence={"source": "test"},
        )


def raw_secret(c: Container, endpoint_id: int) -> str:
    """The column as stored, read with plain SQL (no code of ours between the database and the test)."""
    with c.db.engine.connect() as conn:
        value = conn.execute(
            text("SELECT secret FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        ).scalar_one()
    return str(value)


def deliver(c: Container) -> event_hooks.DeliveryCounts:
    with httpx.Client() as http:
        return event_hooks.deliver_due(c.db, c.clock, http, CONFIG, c.secret_box())


def test_the_column_never_holds_the_secret_and_deliveries_verify(old: Container, receiver: Receiver) -> None:
    endpoint = register(old, receiver.url)
    stored = raw_secret(old, endpoint.id)
    key_part = endpoint.secret.removeprefix("whsec_")
    assert stored.startswith("v1:") and key_part not in stored and endpoint.secret not in stored
    assert old.secret_box().open(stored, what="x") == endpoint.secret  # round trip through the database
    with old.db.read() as conn:
        assert all("secret" not in e for e in event_hooks.list_endpoints(conn))  # shown once, at creation

    opt_out(old)
    assert deliver(old).delivered == 1
    (got,) = receiver.accepted()
    assert Webhook(endpoint.secret).verify(got.body, got.headers)["type"] == "opt_out"


def test_a_key_change_with_the_old_key_listed_then_rotate(
    old: Container, db_url: str, clock: FrozenClock, receiver: Receiver
) -> None:
    endpoint = register(old, receiver.url)
    before = raw_secret(old, endpoint.id)
    opt_out(old)

    rotated = container_with(db_url, clock, NEW_KEY, previous=OLD_KEY)
    try:
        assert deliver(rotated).delivered == 1  # still readable under the old key
        Webhook(endpoint.secret).verify(receiver.received[-1].body, receiver.received[-1].headers)
        with rotated.db.transaction() as conn:
            counts = event_hooks.rotate_secrets(conn, rotated.secret_box())
        assert (counts.re_encrypted, counts.encrypted, counts.unchanged) == (1, 0, 0)
        after = raw_secret(rotated, endpoint.id)
        assert after != before and after.startswith("v1:")
        with rotated.db.transaction() as conn:  # a second run has nothing left to do
            assert event_hooks.rotate_secrets(conn, rotated.secret_box()).unchanged == 1
    finally:
        rotated.close()

    only_new = container_with(db_url, clock, NEW_KEY)  # the old key dropped after the rotation
    try:
        opt_out(only_new, "+14155550135")
        assert deliver(only_new).delivered == 1
        Webhook(endpoint.secret).verify(receiver.received[-1].body, receiver.received[-1].headers)
    finally:
        only_new.close()


def test_a_wrong_key_is_a_clear_error_and_loses_no_delivery(
    old: Container, db_url: str, clock: FrozenClock, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = register(old, receiver.url)
    opt_out(old)
    stored = raw_secret(old, endpoint.id)
    wrong = container_with(db_url, clock, OTHER_KEY)
    try:
        with caplog.at_level(logging.DEBUG):
            counts = deliver(wrong)
        assert counts.retrying == 1 and receiver.received == []  # not sent unsigned or wrongly signed
        (attempt,) = [dict(r._mapping) for r in _all(wrong, webhook_attempts)]
        assert "cannot be decrypted with OPTLINE_SECRET_KEY" in attempt["error"]
        assert "OPTLINE_PREVIOUS_SECRET_KEYS" in attempt["error"]
        (delivery,) = _all(wrong, webhook_deliveries)
        assert delivery.status == "pending"  # retried once the key is configured
        for leaked in (endpoint.secret, endpoint.secret.removeprefix("whsec_"), stored, OLD_KEY, OTHER_KEY):
            assert leaked not in caplog.text and leaked not in attempt["error"]

        with wrong.db.transaction() as conn:  # rotation leaves what it cannot open as it is, and names it
            rotation = event_hooks.rotate_secrets(conn, wrong.secret_box())
        assert rotation.unreadable == [endpoint.id] and rotation.re_encrypted == rotation.encrypted == 0
        assert raw_secret(wrong, endpoint.id) == stored
    finally:
        wrong.close()

    fixed = container_with(db_url, clock, OTHER_KEY, previous=OLD_KEY)
    try:
        clock.advance(minutes=1)
        assert deliver(fixed).delivered == 1
        Webhook(endpoint.secret).verify(receiver.received[-1].body, receiver.received[-1].headers)
    finally:
        fixed.close()


def test_a_legacy_clear_secret_still_signs_and_rotate_encrypts_it(old: Container, receiver: Receiver) -> None:
    endpoint = register(old, receiver.url)
    with old.db.transaction() as conn:  # as an older version stored it
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint.id)
            .values(secret=endpoint.secret)
        )
    opt_out(old)
    assert deliver(old).delivered == 1
    Webhook(endpoint.secret).verify(receiver.received[-1].body, receiver.received[-1].headers)
    with old.db.transaction() as conn:
        counts = event_hooks.rotate_secrets(conn, old.secret_box())
    assert (counts.encrypted, counts.re_encrypted) == (1, 0)
    stored = raw_secret(old, endpoint.id)
    assert stored.startswith("v1:") and endpoint.secret not in stored


def test_optline_secrets_rotate(old: Container, db_url: str, receiver: Receiver) -> None:
    endpoint = register(old, receiver.url)
    before = raw_secret(old, endpoint.id)
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_ENV": "test", "OPTLINE_SECRET_KEY": NEW_KEY}
    refused = subprocess.run([OPTLINE, "secrets", "rotate"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"webhook endpoint(s) {endpoint.id} cannot be decrypted" in refused.stderr
    assert (
        "were left as they are" in refused.stderr and endpoint.secret not in refused.stdout + refused.stderr
    )
    assert raw_secret(old, endpoint.id) == before
    env["OPTLINE_PREVIOUS_SECRET_KEYS"] = f"unrelated-key-0123456789abcdef, {OLD_KEY}"
    done = subprocess.run([OPTLINE, "secrets", "rotate"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 secret re-encrypted under the current key" in done.stdout
    assert endpoint.secret not in done.stdout + done.stderr
    after = raw_secret(old, endpoint.id)
    assert after != before
    new_only = Settings(env="test", database_url=db_url, secret_key=NEW_KEY)
    c = build(new_only, clock=old.clock)
    try:
        assert c.secret_box().open(after, what="x") == endpoint.secret
    finally:
        c.close()


def test_a_generated_key_stays_readable_once_an_explicit_key_is_set(db_url: str, clock: FrozenClock) -> None:
    generated = build(Settings(env="test", database_url=db_url), clock=clock)
    try:
        endpoint = register(generated, "https://crm.example.com/hooks")
        stored = raw_secret(generated, endpoint.id)
    finally:
        generated.close()
    explicit = container_with(db_url, clock, NEW_KEY)
    try:
        assert explicit.secret_box().open(stored, what="x") == endpoint.secret
    finally:
        explicit.close()


def _all(c: Container, table: Any) -> list[Any]:
    with c.db.read() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)))
