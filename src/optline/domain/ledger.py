"""The consent ledger's hash chain: canonical form, hashing, verification. Pure; no I/O.

Design (see DESIGN.md, "the hash chain under concurrency"): one chain per contact. Each event carries
``seq`` (1, 2, 3 … within its contact) and ``prev_hash`` (the hash of the contact's previous event, or
GENESIS). Writers lock the contact row before appending, so two writers can never extend the same head,
and writers for different contacts never wait for each other. Deleting a contact's whole chain, or its
newest events, is caught by the ledger digests: periodically the heads of all chains are hashed together
and that digest is itself chained, so a head that moves backwards or vanishes is detected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

GENESIS = "0" * 64


def iso(value: datetime) -> str:
    """The one text form of a ledger time (hashed, exported, signed): UTC with microseconds and a Z."""
    if value.tzinfo is None:  # stored as naive UTC on SQLite
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Built once: ``json.dumps`` with these options builds an encoder per call (an import hashes a million events).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@lru_cache(maxsize=4096)
def _iso_cached(value: datetime) -> str:
    # An import's events share their recorded_at and most share an occurred_at: each is formatted once.
    # Equal datetimes are the same instant (naive and aware ones are never equal), so they share one text.
    return iso(value)


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no whitespace, UTC timestamps with microseconds."""
    body = {
        "contact_id": event["contact_id"],
        "seq": event["seq"],
        "program_id": event["program_id"],
        "brand": event["brand"],
        "action": str(event["action"]),
        "channel": str(event["channel"]),
        "evidence": event["evidence"] or {},
        "occurred_at": _iso_cached(event["occurred_at"]),
        "recorded_at": _iso_cached(event["recorded_at"]),
        "prev_hash": event["prev_hash"],
    }
    return _CANONICAL.encode(body).encode()


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def canonical_json(value: Any) -> str:
    """A value (an event's evidence) in the canonical form ``canonical`` embeds it in."""
    return _CANONICAL.encode(value)


def first_event_hasher(
    *, program_id: int | None, brand: str, action: str, channel: str, recorded_at: datetime
) -> Callable[[int, str, datetime], str]:
    """``event_hash`` of the first event of new chains (seq 1 after GENESIS) that share everything but the
    contact, the evidence and the time of consent: ``hash_of(contact_id, canonical_json(evidence),
    occurred_at)``. Built for imports: the evidence arrives already in its canonical text (computed in the
    parse workers), so a million events are hashed without building and encoding a million dicts.

    The same bytes as ``canonical`` (its keys in sorted order, each fixed part encoded by the same encoder):
    tests/unit/test_ledger_chain.py compares the two over awkward evidence."""
    enc = _CANONICAL.encode
    head = f'{{"action":{enc(action)},"brand":{enc(brand)},"channel":{enc(channel)},"contact_id":'
    tail = (
        f'"prev_hash":{enc(GENESIS)},"program_id":{enc(program_id)},'
        f'"recorded_at":{enc(_iso_cached(recorded_at))},"seq":1}}'
    )
    sha256 = hashlib.sha256

    def hash_of(contact_id: int, evidence_json: str, occurred_at: datetime) -> str:
        body = (
            f'{head}{int(contact_id)},"evidence":{evidence_json},'
            f'"occurred_at":"{_iso_cached(occurred_at)}",{tail}'
        )
        return sha256(body.encode()).hexdigest()

    return hash_of


def digest_of_heads(heads: Iterable[tuple[int, int, str]], prev_digest: str) -> str:
    """Hash of every chain head (contact_id, seq, hash), in contact order, chained to the previous digest."""
    h = hashlib.sha256(prev_digest.encode())
    for contact_id, seq, head in sorted(heads):
        h.update(f"|{contact_id}:{seq}:{head}".encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Break:
    event_id: int
    contact_id: int
    seq: int
    reason: str


class ChainVerifier:
    """Feed events ordered by (contact_id, seq); collects every break, reports the first."""

    def __init__(self) -> None:
        self._contact: int | None = None
        self._expected_prev = GENESIS
        self._expected_seq = 1
        self.breaks: list[Break] = []
        self.checked = 0
        self.heads: dict[int, tuple[int, str]] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        self.checked += 1
        contact_id = event["contact_id"]
        if contact_id != self._contact:
            self._contact, self._expected_prev, self._expected_seq = contact_id, GENESIS, 1
        where = (event["id"], contact_id, event["seq"])
        if event["seq"] != self._expected_seq:
            self.breaks.append(Break(*where, f"sequence gap: expected seq {self._expected_seq}"))
        if event["prev_hash"] != self._expected_prev:
            self.breaks.append(Break(*where, "prev_hash does not match the previous event's hash"))
        recomputed = event_hash(event)
        if recomputed != event["hash"]:
            self.breaks.append(Break(*where, "content changed: stored hash does not match the event"))
        self._expected_prev, self._expected_seq = event["hash"], event["seq"] + 1
        self.heads[contact_id] = (event["seq"], event["hash"])
