"""The hash chain itself: any change to any stored event is detected."""

from __future__ import annotations

import json
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


# The hashed bytes may never change: every stored chain and every exported file was hashed over them. This
# is ``canonical`` as first written (json.dumps per event, iso per time); the faster one must agree byte for byte.
def _canonical_as_first_written(event: dict[str, Any]) -> bytes:
    body = {
        "contact_id": event["contact_id"], "seq": event["seq"], "program_id": event["program_id"],
        "brand": event["brand"], "action": str(event["action"]), "channel": str(event["channel"]),
        "evidence": event["evidence"] or {}, "occurred_at": ledger.iso(event["occurred_at"]),
        "recorded_at": ledger.iso(event["recorded_at"]), "prev_hash": event["prev_hash"],
    }  # fmt: skip
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


_text = st.text(
    alphabet=st.characters(codec="utf-8"), max_size=12
)  # any character: é, 中文, emoji, \x00, \n, "
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | _text
    | st.datetimes(timezones=st.none() | st.just(UTC)),  # a datetime in evidence goes through default=str
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_times = st.datetimes(
    min_value=datetime(1970, 1, 2), timezones=st.none() | st.just(UTC) | st.timezones()
)  # naive (SQLite), UTC, or any zone: hashed as the same UTC instant


@given(
    contact_id=st.integers(1, 2**62),
    seq=st.integers(1, 10**6),
    program_id=st.none() | st.integers(1, 10**9),
    brand=_text,
    action=st.sampled_from(list(Action)),
    channel=st.sampled_from(list(Channel)),
    evidence=st.none() | st.dictionaries(_text, _values, max_size=6),
    occurred_at=_times,
    recorded_at=_times,
    prev_hash=st.sampled_from([ledger.GENESIS, "ab" * 32]),
)
def test_the_hashed_bytes_are_exactly_as_first_written(**event: Any) -> None:
    event["action"], event["channel"] = event["action"].value, event["channel"].value
    assert ledger.canonical(event) == _canonical_as_first_written(event)
    assert ledger.canonical(event) == ledger.canonical(event)  # the second time from the cached times


def test_the_auditors_checker_agrees_on_non_ascii_evidence() -> None:
    # tools/verify_export.py recomputes hashes from the exported JSON with the standard library only.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "tools" / "verify_export.py"
    spec = importlib.util.spec_from_file_location("verify_export", path)
    assert spec and spec.loader
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    event = make_chain(1)[0]
    event["evidence"] = {"message_text": "ARRÊTER 停止 🛑", "name": 'Zoë "Q" \\ \n', "line": 7}
    event["hash"] = ledger.event_hash(event)
    exported = {**event, "occurred_at": ledger.iso(event["occurred_at"]),
                "recorded_at": ledger.iso(event["recorded_at"])}  # fmt: skip
    assert checker.event_hash(exported) == event["hash"]


_evidence_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    contact_id=st.integers(min_value=1, max_value=2**62),
    evidence=st.dictionaries(st.text(max_size=12), _evidence_values, max_size=6),
    brand=st.text(max_size=20),
    program_id=st.none() | st.integers(min_value=1, max_value=2**40),
    occurred=st.datetimes(timezones=st.just(UTC)),
    recorded=st.datetimes(timezones=st.just(UTC)),
)
def test_the_import_hasher_hashes_what_event_hash_hashes(
    contact_id: int,
    evidence: dict[str, Any],
    brand: str,
    program_id: int | None,
    occurred: datetime,
    recorded: datetime,
) -> None:
    # The import's shortcut must produce the very bytes of the canonical form, or its chains would not verify.
    hash_of = ledger.first_event_hasher(
        program_id=program_id, brand=brand, action="opt_in", channel="import", recorded_at=recorded
    )
    event = {
        "contact_id": contact_id, "seq": 1, "program_id": program_id, "brand": brand, "action": Action.OPT_IN,
        "channel": Channel.IMPORT, "evidence": evidence, "occurred_at": occurred, "recorded_at": recorded,
        "prev_hash": ledger.GENESIS,
    }  # fmt: skip
    assert hash_of(contact_id, ledger.canonical_json(evidence), occurred) == ledger.event_hash(event)


def test_json_text_of_a_row_is_json_dumps() -> None:
    from optline.services import contacts_import

    cells = ["(415) 555-0134", 'Gus "G" Jr', "Zürich \U0001f600", "", "a\\b\nc"]
    assert contacts_import._json_list(cells) == json.dumps(cells)
    attributes = {"first_name": "José", "note": 'say "hi"\t'}
    assert contacts_import._json_object(attributes) == json.dumps(attributes)


_cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    cells=st.fixed_dictionaries(
        {},
        optional={
            k: _cell
            for k in ("consent_source", "consent_text", "consent_url", "ip", "user_agent", "first_name")
        },
    ),
    source=_cell.filter(bool),
    line=st.integers(min_value=2, max_value=10**9),
)
def test_evidence_text_of_a_row_is_canonical_json(cells: dict[str, str], source: str, line: int) -> None:
    # The parse workers write a row's evidence text by hand; the ledger hashes it as it is, so it must be
    # exactly canonical_json of the dict the rules describe (empty cells left out, source, file_line).
    from optline.services import contacts_import

    evidence: dict[str, Any] = {
        k: v for k, v in cells.items() if k in contacts_import._EVIDENCE_COLUMNS and v
    }
    evidence["source"] = source
    evidence["file_line"] = line
    assert contacts_import._evidence_json(cells, source, line) == ledger.canonical_json(evidence)
