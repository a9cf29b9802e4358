"""The hash chain itself: any change to any stored event is detected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optline.domain import ledger
from optline.domain.consent import Action, Channel

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_chain(n: int, contact_id: int = 7) -> list[dict[str, Any]]:
    events, prev = [], ledger.GENESIS
    for i in range(n):
        event = {
            "id": i + 1, "contact_id": contact_id, "seq": i + 1, "program_id": 1 if i % 2 else None,
            "brand": "Acme", "action": list(Action)[i % len(Action)].value,
            "channel": list(Channel)[i % len(Channel)].value, "evidence": {"message_text": f"m{i}", "n": i},
            "occurred_at": T0 + timedelta(minutes=i), "recorded_at": T0 + timedelta(minutes=i, seconds=1),
            "prev_hash": prev,
        }  # fmt: skip
        event["hash"] = ledger.event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


def verify(events: list[dict[str, Any]]) -> ledger.ChainVerifier:
    v = ledger.ChainVerifier()
    for e in events:
        v.feed(e)
    return v


def test_intact_chain_verifies() -> None:
    assert verify(make_chain(20)).breaks == []


def test_naive_and_aware_utc_hash_alike() -> None:
    e = make_chain(1)[0]
    naive = {
        **e,
        "occurred_at": e["occurred_at"].replace(tzinfo=None),
        "recorded_at": e["recorded_at"].replace(tzinfo=None),
    }
    assert ledger.event_hash(naive) == e["hash"]


FIELDS = [
    "program_id",
    "brand",
    "action",
    "channel",
    "evidence",
    "occurred_at",
    "recorded_at",
    "prev_hash",
    "hash",
]


@given(st.integers(min_value=0, max_value=9), st.sampled_from(FIELDS), st.text(min_size=1, max_size=5))
def test_any_change_to_any_event_is_detected(index: int, field: str, junk: str) -> None:
    events = make_chain(10)
    original = events[index][field]
    if isinstance(original, datetime):
        events[index][field] = original + timedelta(microseconds=1)
    elif isinstance(original, dict):
        events[index][field] = {**original, "tampered": junk}
    elif isinstance(original, int) or original is None:
        events[index][field] = (original or 0) + 1
    else:
        events[index][field] = original + junk
    breaks = verify(events).breaks
    assert breaks, f"changing {field} of event {index} went unnoticed"
    assert breaks[0].seq == index + 1


@given(st.integers(min_value=0, max_value=9))
def test_removing_an_event_from_the_middle_is_detected(index: int) -> None:
    events = make_chain(10)
    del events[index]
    if index == 9:
        return  # removing the newest event: only the digests catch that (tested on the database)
    assert verify(events).breaks


def test_digest_depends_on_every_head_and_the_previous_digest() -> None:
    heads = [(1, 3, "a" * 64), (2, 1, "b" * 64)]
    d = ledger.digest_of_heads(heads, ledger.GENESIS)
    assert d == ledger.digest_of_heads(list(reversed(heads)), ledger.GENESIS)  # order-independent input
    assert d != ledger.digest_of_heads(heads[:1], ledger.GENESIS)
    assert d != ledger.digest_of_heads([(1, 3, "c" * 64), heads[1]], ledger.GENESIS)
    assert d != ledger.digest_of_heads(heads, d)
