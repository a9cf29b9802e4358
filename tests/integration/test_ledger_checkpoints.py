"""Signed checkpoints catch what the database alone cannot: a rewrite by someone with full database access
who recomputed every hash and digest, or erased a whole chain (both engines)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from optline.adapters import checkpoint_log
from optline.adapters import ledger_signing as keys
from optline.adapters.clock import FrozenClock
from optline.adapters.db import contacts, ledger, programs
from optline.bootstrap import Container
from optline.config import Settings
from optline.domain import checkpoint as cp
from optline.domain.consent import Action, Channel
from optline.domain.ledger import Break
from optline.domain.phones import parse_phone
from optline.services import checkpoints, consent, ledger_export
from tests.integration.test_ledger_tamper import _opted_out
from tests.support import tamper


@pytest.fixture
def signed(container: Container, tmp_path: Path) -> Container:
    """The container with a key file and a checkpoint log of its own, outside the database."""
    container.settings = container.settings.model_copy(
        update={
            "ledger_signing_key_file": str(tmp_path / "ledger.key"),
            "ledger_checkpoint_log": str(tmp_path / "elsewhere" / "checkpoints.jsonl"),
        }
    )
    return container


def _log(container: Container) -> Path:
    return Path(keys.checkpoint_log(container.settings) or "")


def _against_log(container: Container) -> tuple[ledger.VerifyResult, list[Break]]:
    """What ``ledger verify --checkpoints`` computes: the plain verification and the checkpoints' breaks."""
    key = keys.public_key_hex(container.settings)
    found, bad = checkpoints.trusted(checkpoint_log.read(_log(container)), key)
    assert found and not bad
    with container.db.read() as conn:
        return ledger.verify(conn), checkpoints.breaks(ledger.recomputed_digests(conn), found)


def test_a_checkpoint_is_signed_logged_and_verifies(signed: Container) -> None:
    _opted_out(signed, 2)
    taken = checkpoints.take(signed)
    assert taken is not None and taken.events == 4 and taken.chains == 2
    (line,) = _log(signed).read_text().splitlines()
    assert cp.parse(line) == taken
    assert oct((Path(signed.settings.ledger_signing_key_file or "")).stat().st_mode & 0o777) == "0o600"
    plain, against = _against_log(signed)
    assert plain.ok and against == []
    # Nothing moved: the worker's scheduled call writes nothing; on demand always writes one.
    assert checkpoints.take(signed, only_if_moved=True) is None
    assert checkpoints.take(signed) is not None and len(_log(signed).read_text().splitlines()) == 2


def test_rewriting_one_event_with_every_hash_and_digest_recomputed_is_caught_by_the_checkpoint(
    signed: Container,
) -> None:
    a, _b = _opted_out(signed, 2)
    checkpoints.take(signed)
    tamper.rewrite_event(signed, a, 1, ip="198.51.100.77")  # the opt-in now "came" from another address
    plain, against = _against_log(signed)
    assert plain.ok, plain.breaks  # the database agrees with itself: only the checkpoint can tell
    (broken,) = against
    assert "events it covers were changed, removed or reordered" in broken.reason


def test_erasing_a_whole_chain_is_caught_by_the_checkpoint(signed: Container) -> None:
    _a, b, _c = _opted_out(signed, 3)
    checkpoints.take(signed)
    tamper.erase_contact_chain(signed, b)
    plain, against = _against_log(signed)
    assert plain.ok and plain.chains == 2  # no subscription, no head, no digest remembers contact b
    assert len(against) == 1 and "changed, removed or reordered" in against[0].reason


def test_events_after_the_checkpoint_do_not_break_it(signed: Container, clock: FrozenClock) -> None:
    _opted_out(signed, 1)
    checkpoints.take(signed)
    clock.advance(hours=1)
    with signed.db.transaction() as conn:  # a newcomer and a help request: newer than the checkpoint
        program = programs.get_by_name(conn, "deals") or {}
        cid = contacts.get_or_create(conn, parse_phone("+14155559999"), clock.now())[0]["id"]
        consent.record(
            conn,
            clock,
            contact_id=cid,
            program=program,
            action=Action.OPT_IN,
            channel=Channel.SMS_KEYWORD,
            evidence={"message_text": "JOIN"},
        )
    plain, against = _against_log(signed)
    assert plain.ok and plain.events == 3 and against == []


def test_a_checkpoint_signed_by_another_key_or_edited_is_refused(signed: Container, tmp_path: Path) -> None:
    _opted_out(signed, 1)
    taken = checkpoints.take(signed)
    assert taken is not None
    key = keys.public_key_hex(signed.settings)
    edited = json.loads(taken.to_json()) | {"events": 1}
    forged_key = keys.decode_seed("11" * 32, "test")
    forged = cp.sign(
        forged_key,
        created_at=signed.clock.now(),
        digest_id=taken.digest_id,
        digest="f" * 64,
        chains=1,
        events=2,
    )
    found = [("edited", cp.parse(json.dumps(edited))), ("forged", forged)]
    good, bad = checkpoints.trusted(found, key)
    assert good == []
    assert "signature does not match" in bad[0].reason and "not the trusted key" in bad[1].reason


def test_production_refuses_to_sign_without_an_existing_key(tmp_path: Path) -> None:
    secret = "Kq3vN8xT2mW7pR4sL9yB6hD1fG5jZ0cE"
    settings = Settings(env="production", secret_key=secret, database_url=f"sqlite:///{tmp_path}/p.db")
    with pytest.raises(keys.SigningKeyError, match="OPTLINE_LEDGER_SIGNING_KEY"):
        keys.signing_key(settings)
    missing = settings.model_copy(update={"ledger_signing_key_file": str(tmp_path / "absent.key")})
    with pytest.raises(keys.SigningKeyError, match="does not exist"):
        keys.signing_key(missing)
    assert not (tmp_path / "absent.key").exists()
    with pytest.raises(keys.SigningKeyError, match="64 hex characters or base64"):
        keys.signing_key(settings.model_copy(update={"ledger_signing_key": SecretStr("too-short")}))


class _Receiver(BaseHTTPRequestHandler):
    received: list[bytes] = []
    status = 201

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(body)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_checkpoints_can_go_to_an_http_endpoint_and_a_refusal_is_an_error(signed: Container) -> None:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://auditor:s3cret-pass@127.0.0.1:{server.server_port}/checkpoints"
        signed.settings = signed.settings.model_copy(update={"ledger_checkpoint_log": url})
        _opted_out(signed, 1)
        taken = checkpoints.take(signed)
        assert taken is not None and [cp.parse(b.decode()) for b in _Receiver.received] == [taken]
        _Receiver.status = 500
        with pytest.raises(checkpoint_log.CheckpointLogError) as refused:
            checkpoints.take(signed)
        assert "answered 500" in str(refused.value) and "s3cret" not in str(refused.value)
        with signed.db.read() as conn:  # no copy of the refused one: the worker's next interval retries
            assert len(ledger.checkpoint_bodies(conn)) == 1
    finally:
        _Receiver.status = 201
        server.shutdown()


def test_reading_digests_and_the_export_leave_the_connection_as_it_was(signed: Container) -> None:
    """Both stream the digest heads (yield_per). Set on the connection, that option would make every later
    statement on it a server-side cursor, and PostgreSQL refuses "DECLARE CURSOR FOR INSERT"."""
    _opted_out(signed, 2)
    checkpoints.take(signed)
    with signed.db.transaction() as conn:
        assert ledger.recomputed_digests(conn)
        assert any(
            '"digest"' in line for line in ledger_export.lines(conn, since=None, now=signed.clock.now())
        )
        # An INSERT on the same connection afterwards.
        person, created = contacts.get_or_create(conn, parse_phone("+14155550177"), signed.clock.now())
        assert created and person["id"]
