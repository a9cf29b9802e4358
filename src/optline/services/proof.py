"""The consent proof for one phone number (issue 16): what a sender hands a lawyer, and what a machine checks.

One dict (the JSON format verbatim; text, HTML and PDF render it): every consent event with its evidence
and the signed checkpoint that covers it; every message with the consent event that authorised it at send
time, the opt-out instruction it carried and its delivery status; each opt-out with the first message
suppressed after it; and the verification of the contact's chain against the latest trusted checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from optline.adapters.db import contacts as contact_repo
from optline.adapters.db import ledger
from optline.adapters.db.tables import campaigns, ledger_digest_heads, messages, programs
from optline.domain import ledger as chain
from optline.domain.compose import optout_instruction
from optline.domain.consent import Action
from optline.domain.phones import parse_phone
from optline.services.checkpoints import Checked, breaks
from optline.services.outbox import REPLY_KINDS

FORMAT = "optline-consent-proof/1"
NEWER = "newer than the last checkpoint"


class UnknownContact(LookupError):
    pass


def _when(value: datetime | None) -> str | None:
    return chain.iso(value) if value is not None else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build(
    conn: Connection,
    phone: str,
    region: str,
    *,
    now: datetime,
    checkpoints: Sequence[Checked],
    checkpoint_problems: Sequence[str] = (),
    checkpoint_source: str = "",
) -> dict[str, Any]:
    """The bundle. ``checkpoints`` are already signature-checked (services.checkpoints.trusted/stored)."""
    e164 = parse_phone(phone, region).e164
    contact = contact_repo.get_by_phone(conn, e164)
    if contact is None:
        raise UnknownContact(f"no contact with the number {e164}")
    cid = contact["id"]
    names = {
        p.id: (p.name, p.brand)
        for p in conn.execute(select(programs.c.id, programs.c.name, programs.c.brand))
    }
    history = ledger.history(conn, cid)
    coverage = _coverage(conn, cid, checkpoints)
    events = [_event(e, names, coverage) for e in history]
    by_id = {e["id"]: e for e in history}
    sent = [_message(m, by_id, names) for m in _messages(conn, cid)]
    return {
        "format": FORMAT,
        "generated_at": chain.iso(now),
        "contact": {"id": cid, "phone": contact["phone"], "created_at": _when(contact["created_at"])},
        "consent_events": events,
        "messages": sent,
        "opt_outs": _opt_outs(history, sent, names),
        "verification": _verification(
            conn, cid, history, checkpoints, checkpoint_problems, checkpoint_source
        ),
    }


def _event(
    e: dict[str, Any], names: dict[int, tuple[str, str]], coverage: dict[int, Checked]
) -> dict[str, Any]:
    evidence = dict(e["evidence"] or {})
    covered = coverage.get(e["seq"])
    return {
        "id": e["id"], "seq": e["seq"], "action": e["action"], "channel": e["channel"],
        "program": names[e["program_id"]][0] if e["program_id"] else None, "brand": e["brand"],
        "scope": "program" if e["program_id"] else "brand-wide",
        "occurred_at": _when(e["occurred_at"]), "recorded_at": _when(e["recorded_at"]),
        "evidence": evidence, "disclosure_version": evidence.get("disclosure_version"),
        "hash": e["hash"], "prev_hash": e["prev_hash"],
        "checkpoint": _checkpoint_ref(covered) if covered else None,
        "covered_by": f"{covered.where}, signed {covered.checkpoint.created_at}" if covered else NEWER,
    }  # fmt: skip


def _checkpoint_ref(c: Checked) -> dict[str, Any]:
    return {"where": c.where, "created_at": c.checkpoint.created_at, "digest_id": c.checkpoint.digest_id,
            "digest": c.checkpoint.digest}  # fmt: skip


def _coverage(conn: Connection, contact_id: int, checkpoints: Sequence[Checked]) -> dict[int, Checked]:
    """seq -> the earliest checkpoint covering it: the one whose digest (or an earlier one) recorded a head of
    this contact at that seq or later (a head's hash commits to every event before it in the chain)."""
    heads = ledger.covered_seqs(conn, contact_id)
    covered: dict[int, Checked] = {}
    upto = 0
    for c in sorted(checkpoints, key=lambda c: c.checkpoint.digest_id):
        reach = max((seq for digest_id, seq in heads if digest_id <= c.checkpoint.digest_id), default=0)
        for seq in range(upto + 1, reach + 1):
            covered[seq] = c
        upto = max(upto, reach)
    return covered


def _messages(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(messages, campaigns.c.name.label("campaign"))
        .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
        .where(messages.c.contact_id == contact_id)
        .order_by(messages.c.created_at, messages.c.id)
    )
    return [dict(r._mapping) for r in rows]


def _message(
    m: dict[str, Any], events: dict[int, dict[str, Any]], names: dict[int, tuple[str, str]]
) -> dict[str, Any]:
    authorised = events.get(m["consent_event_id"]) if m["consent_event_id"] else None
    return {
        "id": m["id"], "kind": m["kind"], "program": names.get(m["program_id"], ("?", ""))[0],
        "campaign": m["campaign"], "body": m["body"], "from": m["from_phone"], "to": m["to_phone"],
        "status": m["status"], "reason": m["reason"], "error_code": m["error_code"],
        "created_at": _when(m["created_at"]), "handed_over_at": _when(m["handed_over_at"]),
        "sent_at": _when(m["sent_at"]), "delivered_at": _when(m["delivered_at"]),
        "updated_at": _when(m["updated_at"]),
        "optout_instruction": optout_instruction(m["body"]),
        "authorised_note": None if authorised else _why_no_consent(m),
        "authorised_by": (
            {"event_id": authorised["id"], "seq": authorised["seq"], "action": authorised["action"],
             "occurred_at": _when(authorised["occurred_at"])} if authorised else None
        ),
    }  # fmt: skip


def _why_no_consent(m: dict[str, Any]) -> str:
    if m["kind"] in REPLY_KINDS:
        return f"a {m['kind']} reply to the person's own message: needs no marketing consent"
    if m["handed_over_at"] is None:
        return "never handed to a provider, so no consent was relied on"
    return "no consent event recorded"


def _opt_outs(
    history: list[dict[str, Any]], sent: list[dict[str, Any]], names: dict[int, tuple[str, str]]
) -> list[dict[str, Any]]:
    """Each opt-out, and the first message in its scope suppressed at or after it: the moment it took effect."""
    found = []
    for e in history:
        if e["action"] != Action.OPT_OUT.value:
            continue
        at = _aware(e["recorded_at"])
        program = names[e["program_id"]][0] if e["program_id"] else None
        in_scope = [
            m
            for m in sent
            if m["status"] == "suppressed"
            and m["updated_at"]
            and m["updated_at"] >= chain.iso(at)
            and (program is None or m["program"] == program)
        ]
        first = min(in_scope, key=lambda m: m["updated_at"], default=None)
        # What must never exist (invariant 2): a message handed over after the opt-out on consent older than it.
        after = [
            m["id"]
            for m in sent
            if m["authorised_by"]
            and m["authorised_by"]["seq"] < e["seq"]
            and m["handed_over_at"]
            and m["handed_over_at"] > chain.iso(at)
            and (program is None or m["program"] == program)
        ]
        found.append({
            "event_id": e["id"], "seq": e["seq"], "channel": e["channel"], "program": program,
            "brand": e["brand"], "recorded_at": chain.iso(at),
            "first_suppressed": (
                {"message_id": first["id"], "at": first["updated_at"], "reason": first["reason"],
                 "body": first["body"]} if first else None
            ),
            "sent_after_on_older_consent": after,
        })  # fmt: skip
    return found


def _verification(
    conn: Connection,
    contact_id: int,
    history: list[dict[str, Any]],
    checkpoints: Sequence[Checked],
    problems: Sequence[str],
    source: str,
) -> dict[str, Any]:
    verifier = chain.ChainVerifier()
    for e in history:
        verifier.feed(e)
    found = [f"seq {b.seq}: {b.reason}" for b in verifier.breaks] + list(problems)
    recorded = conn.execute(
        select(ledger_digest_heads.c.digest_id, ledger_digest_heads.c.seq, ledger_digest_heads.c.hash).where(
            ledger_digest_heads.c.contact_id == contact_id
        )
    ).all()
    hashes = {e["seq"]: e["hash"] for e in history}
    found += [
        f"seq {r.seq}, recorded by digest {r.digest_id}, is missing or changed"
        for r in recorded
        if hashes.get(r.seq) != r.hash
    ]
    latest = max(checkpoints, key=lambda c: c.checkpoint.digest_id, default=None)
    if latest is not None:
        found += [b.reason for b in breaks(ledger.recomputed_digests(conn), [latest])]
    ok = not found
    if latest is None:
        statement = "The chain recomputes, but no signed checkpoint exists yet: nothing outside the database vouches for it."
    elif ok:
        statement = (
            f"The chain recomputes and agrees with the latest signed checkpoint ({latest.where}, "
            f"{latest.checkpoint.created_at}): no event it covers was changed, removed or reordered."
        )
    else:
        statement = "VERIFICATION FAILED: " + "; ".join(found)
    return {
        "ok": ok, "events_checked": verifier.checked, "problems": found, "checkpoint_source": source,
        "latest_checkpoint": {**_checkpoint_ref(latest), "public_key": latest.checkpoint.public_key,
                              "signature": latest.checkpoint.signature} if latest else None,
        "statement": statement,
    }  # fmt: skip
