"""Taking and checking signed ledger checkpoints (issue 16). See domain.checkpoint for what is signed.

Taking one: record a ledger digest (the heads that moved) and commit it, sign the digest chain's newest value
with the key outside the database, append it to the external log, then keep a copy in the database. The log
is written after the commit (a checkpoint must never name a digest that was rolled back), the copy after the
log (the worker's "has the ledger moved since the last checkpoint" reads the copies).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from optline.adapters import checkpoint_log
from optline.adapters import ledger_signing as keys
from optline.adapters.db import ledger
from optline.bootstrap import Container
from optline.domain import checkpoint as cp
from optline.domain.ledger import Break


def take(container: Container, *, only_if_moved: bool = False) -> cp.Checkpoint | None:
    """Sign and log a checkpoint of the ledger now. None when the ledger is empty, or (``only_if_moved``)
    when it has not grown since the last checkpoint the log accepted."""
    settings = container.settings
    target = keys.checkpoint_log(settings)
    if target is None:
        raise keys.SigningKeyError(
            "no checkpoint log: set OPTLINE_LEDGER_CHECKPOINT_LOG to a file on other storage or an http(s) URL"
        )
    key = keys.signing_key(settings)
    with container.db.transaction() as conn:
        chains, events = ledger.totals(conn)
        if only_if_moved and _last_totals(conn) == (chains, events):
            return None  # the ledger only grows: same counts, same events as the last checkpoint
        ledger.record_digest(conn, container.clock.now())
        newest = ledger.newest_digest(conn)
    if newest is None:
        return None
    signed = cp.sign(
        key,
        created_at=container.clock.now(),
        digest_id=newest.id,
        digest=newest.digest,
        chains=chains,
        events=events,
    )
    checkpoint_log.append(target, signed)
    # The copy only once the log has it: a log that refused this one gets it again at the next interval.
    with container.db.transaction() as conn:
        ledger.save_checkpoint(
            conn, created_at=container.clock.now(), digest_id=newest.id, body=signed.to_json()
        )
    return signed


def _last_totals(conn: Connection) -> tuple[int, int] | None:
    bodies = ledger.checkpoint_bodies(conn)
    if not bodies:
        return None
    last = cp.parse(bodies[-1])
    return last.chains, last.events


@dataclass(frozen=True, slots=True)
class Checked:
    """A checkpoint whose signature holds, with where it came from (a log line or the database copy)."""

    where: str
    checkpoint: cp.Checkpoint


def trusted(found: Iterable[tuple[str, cp.Checkpoint]], public_key: str) -> tuple[list[Checked], list[Break]]:
    """Split checkpoints into those signed by ``public_key`` and a break for each that is not."""
    good, bad = [], []
    for where, checkpoint in found:
        try:
            cp.check_signature(checkpoint, public_key, where)
        except cp.CheckpointError as exc:
            bad.append(Break(0, 0, 0, str(exc)))
            continue
        good.append(Checked(where, checkpoint))
    return good, bad


def stored(conn: Connection, public_key: str) -> tuple[list[Checked], list[Break]]:
    """The database's copies of the checkpoints, each checked against the signing key."""
    found = [
        (f"checkpoint {i}", cp.parse(body, f"checkpoint {i}"))
        for i, body in enumerate(ledger.checkpoint_bodies(conn), start=1)
    ]
    return trusted(found, public_key)


def breaks(links: dict[int, ledger.DigestLink], checkpoints: Iterable[Checked]) -> list[Break]:
    """Each checkpoint must find its digest, recomputed from the heads now in the database, unchanged.

    ``links`` comes from ledger.recomputed_digests; ledger.verify separately proves every recorded head
    still ends an intact chain. Together: no event a checkpoint covers was changed, removed or reordered."""
    found = []
    for c in checkpoints:
        link = links.get(c.checkpoint.digest_id)
        signed = f"{c.where} (signed {c.checkpoint.created_at}) commits to digest {c.checkpoint.digest_id}"
        if link is None:
            found.append(
                Break(0, 0, 0, f"{signed}, which is no longer in the database: digests were removed")
            )
        elif link.recomputed != c.checkpoint.digest:
            found.append(
                Break(
                    0,
                    0,
                    0,
                    f"{signed} = {c.checkpoint.digest[:16]}…, but the database's heads "
                    f"recompute to {link.recomputed[:16]}…: events it covers were changed, "
                    "removed or reordered",
                )
            )
    return found


def for_proof(
    container: Container, conn: Connection, log: Path | None = None
) -> tuple[list[Checked], list[str], str]:
    """The checkpoints a proof is checked against, the problems with them, and where they came from: the
    given log, else the configured log file, else the database's copies (each signature-checked)."""
    try:
        key = keys.public_key_hex(container.settings)
    except keys.SigningKeyError:
        return [], [], "none: no ledger signing key exists yet"
    configured = keys.checkpoint_log(container.settings)
    if log is None and configured and not checkpoint_log.is_url(configured) and Path(configured).exists():
        log = Path(configured)
    if log is not None:
        good, bad = trusted(checkpoint_log.read(log), key)
        source = f"checkpoint log {log}"
    else:
        good, bad = stored(conn, key)
        source = "the database's copies of the checkpoints"
    return good, [b.reason for b in bad], f"{source}, key {key}"
