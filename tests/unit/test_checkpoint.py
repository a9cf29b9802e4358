"""Checkpoint signing and parsing, and finding a message's opt-out instruction (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from optline.domain import checkpoint as cp
from optline.domain.compose import optout_instruction

KEY = SigningKey(bytes(range(32)))
AT = datetime(2026, 11, 26, 19, 0, tzinfo=UTC)


def _signed() -> cp.Checkpoint:
    return cp.sign(KEY, created_at=AT, digest_id=7, digest="ab" * 32, chains=2, events=5)


def test_a_checkpoint_round_trips_and_its_signature_checks_with_any_ed25519_tool() -> None:
    c = _signed()
    assert cp.parse(c.to_json()) == c and c.created_at == "2026-11-26T19:00:00.000000Z"
    cp.check_signature(c, KEY.verify_key.encode().hex())
    # What is signed is plain canonical JSON, so openssl or any library can check it from the log line.
    KEY.verify_key.verify(c.signed_bytes(), bytes.fromhex(c.signature))
    assert c.signed_bytes().startswith(b'{"chains":2,"created_at":"2026-11-26T19:00:00.000000Z"')


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "log:3: not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"version": 1}', "missing created_at, digest_id"),
        (_signed().to_json().replace('"version": 1', '"version": 9'), "unknown checkpoint version 9"),
        (_signed().to_json().replace('"digest_id": 7', '"digest_id": "seven"'), "invalid literal"),
    ],
)
def test_a_malformed_checkpoint_is_named(line: str, message: str) -> None:
    with pytest.raises(cp.CheckpointError, match=message):
        cp.parse(line, "log:3")


def test_a_changed_field_breaks_the_signature() -> None:
    changed = cp.parse(_signed().to_json().replace('"events": 5', '"events": 4'))
    with pytest.raises(cp.CheckpointError, match="signature does not match"):
        cp.check_signature(changed, KEY.verify_key.encode().hex())


@pytest.mark.parametrize(
    ("body", "instruction"),
    [
        ("Acme: 20% off today. Reply STOP to opt out.", "Reply STOP to opt out."),
        ("Acme: new beans! Opt out: https://x.example/u/abc123", "Opt out: https://x.example/u/abc123"),
        ("Acme: hola. Responde BAJA para darte de baja.", "Responde BAJA para darte de baja."),
        ("Acme: your order shipped.", None),
    ],
)
def test_the_opt_out_instruction_a_message_carried(body: str, instruction: str | None) -> None:
    assert optout_instruction(body) == instruction
