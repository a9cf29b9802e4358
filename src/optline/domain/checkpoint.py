"""Signed ledger checkpoints: what is signed, how, and how a signature is checked. Pure; no I/O.

The ledger digests (domain.ledger.digest_of_heads) chain every chain head ever recorded, but they live in
the database: someone with full access can rewrite an event, every later hash and every digest, and the
database agrees with itself again. A checkpoint commits to the digest chain's tip with an Ed25519 signature
made by a key that is not in the database, and is appended to a log kept elsewhere. Recomputing the digest
chain from the database and finding the signed value at the signed position proves that no head covered by
it (hence no event before that head in its chain) was changed, removed or reordered.

A checkpoint is one JSON object: the signed fields below plus ``signature`` (hex) over ``signed_bytes``, so
any Ed25519 tool can check it (the public key is in the object; trust it only when it is the key you hold).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from optline.domain.ledger import iso

VERSION = 1
SIGNED_FIELDS = ("version", "created_at", "digest_id", "digest", "chains", "events", "public_key")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: malformed, unsigned, signed by another key or tampered with."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    created_at: str  # ISO 8601 UTC, as signed
    digest_id: int  # the position of the signed digest in the digest chain
    digest: str  # the digest chain's value at that position
    chains: int  # chains with events when it was taken (informative)
    events: int  # events in the ledger when it was taken (informative)
    public_key: str  # hex Ed25519 verify key
    signature: str  # hex Ed25519 signature over signed_bytes()

    def signed_fields(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "created_at": self.created_at,
            "digest_id": self.digest_id,
            "digest": self.digest,
            "chains": self.chains,
            "events": self.events,
            "public_key": self.public_key,
        }

    def signed_bytes(self) -> bytes:
        return canonical(self.signed_fields())

    def to_json(self) -> str:
        return json.dumps({**self.signed_fields(), "signature": self.signature}, sort_keys=True)


def canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(
    key: SigningKey, *, created_at: datetime, digest_id: int, digest: str, chains: int, events: int
) -> Checkpoint:
    unsigned = Checkpoint(
        created_at=iso(created_at),
        digest_id=digest_id,
        digest=digest,
        chains=chains,
        events=events,
        public_key=key.verify_key.encode().hex(),
        signature="",
    )
    return replace(unsigned, signature=key.sign(unsigned.signed_bytes()).signature.hex())


def parse(line: str, where: str = "checkpoint") -> Checkpoint:
    """One checkpoint from its JSON text; CheckpointError naming what is wrong (not yet the signature)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    missing = [f for f in (*SIGNED_FIELDS, "signature") if f not in data]
    if missing:
        raise CheckpointError(f"{where}: missing {', '.join(missing)}")
    if data["version"] != VERSION:
        raise CheckpointError(f"{where}: unknown checkpoint version {data['version']!r}")
    try:
        return Checkpoint(
            created_at=str(data["created_at"]),
            digest_id=int(data["digest_id"]),
            digest=str(data["digest"]),
            chains=int(data["chains"]),
            events=int(data["events"]),
            public_key=str(data["public_key"]),
            signature=str(data["signature"]),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def check_signature(checkpoint: Checkpoint, trusted_key: str, where: str = "checkpoint") -> None:
    """Raise CheckpointError unless ``checkpoint`` was signed by ``trusted_key`` (hex) and is unchanged."""
    if checkpoint.public_key != trusted_key:
        raise CheckpointError(
            f"{where}: signed by key {checkpoint.public_key[:16]}…, not the trusted key {trusted_key[:16]}…"
        )
    try:
        VerifyKey(bytes.fromhex(trusted_key)).verify(
            checkpoint.signed_bytes(), bytes.fromhex(checkpoint.signature)
        )
    except (BadSignatureError, ValueError):
        raise CheckpointError(f"{where}: the signature does not match its content") from None
