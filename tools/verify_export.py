#!/usr/bin/env python3
"""Check an `optline ledger export --format jsonl` file without optline: Python's standard library only.

    python3 verify_export.py ledger.jsonl [--checkpoints checkpoints.jsonl]

For every event: recompute its SHA-256 over the canonical JSON of the fields below (sorted keys, no spaces,
UTF-8) and check it chains onto the previous event of the same contact (seq 1, 2, 3 … from prev_hash
"000…0"). For every digest: recompute SHA-256(prev_digest, then "|contact:seq:hash" per head in contact
order), chained from "000…0", and check each head is an exported event. With --checkpoints, the digest each
checkpoint names must equal the recomputed one (check the checkpoints' Ed25519 signatures separately, e.g.
with openssl; see the README). Prints OK and the digest chain's tip, or every problem; exit 0 or 1.
"""

import hashlib
import json
import sys

GENESIS = "0" * 64
HASHED = ("contact_id", "seq", "program_id", "brand", "action", "channel", "evidence",
          "occurred_at", "recorded_at", "prev_hash")  # fmt: skip


def event_hash(event):
    body = {k: event[k] for k in HASHED}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def digest_of(heads, prev):
    h = hashlib.sha256(prev.encode())
    for contact_id, seq, head in sorted(tuple(x) for x in heads):
        h.update(f"|{contact_id}:{seq}:{head}".encode())
    return h.hexdigest()


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--checkpoints"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems, events, digests = [], {}, []
    with open(argv[1], encoding="utf-8") as f:
        header = json.loads(f.readline())
        partial = header.get("since") is not None  # chains then start at the first exported seq
        last = {}  # contact_id -> (seq, hash) of the previous exported event
        for number, line in enumerate(f, start=2):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not JSON ({exc.msg})")
                continue
            if item["type"] == "digest":
                digests.append(item)
                continue
            cid, seq = item["contact_id"], item["seq"]
            if event_hash(item) != item["hash"]:
                problems.append(f"line {number}: contact {cid} seq {seq}: content does not match its hash")
            if cid in last:
                want_seq, want_prev = last[cid][0] + 1, last[cid][1]
            else:
                want_seq, want_prev = (seq, item["prev_hash"]) if partial else (1, GENESIS)
            if seq != want_seq or item["prev_hash"] != want_prev:
                problems.append(f"line {number}: contact {cid} seq {seq}: does not follow its previous event")
            last[cid] = (seq, item["hash"])
            events[(cid, seq)] = item["hash"]
    recomputed, prev = {}, GENESIS
    for d in digests:
        value = digest_of(d["heads"], prev)
        if d["prev_digest"] != prev or d["digest"] != value:
            problems.append(f"digest {d['id']}: does not match its heads and the previous digest")
        for cid, seq, head in d["heads"]:
            if events.get((cid, seq), head if partial else None) != head:
                problems.append(f"digest {d['id']}: contact {cid} seq {seq} is missing or changed")
        recomputed[d["id"]] = prev = value
    if len(argv) == 4:
        with open(argv[3], encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    c = json.loads(line)
                    if recomputed.get(c["digest_id"]) != c["digest"]:
                        problems.append(
                            f"checkpoint line {number}: digest {c['digest_id']} differs from the export"
                        )
    for p in problems:
        print(p)
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    print(f"OK: {len(events)} events, {len(last)} chains, {len(digests)} digests; digest tip {prev}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
