"""Sliding-window rate limits kept in the database, so that every process of one installation counts the
same requests (the login form's limit must hold however many ``serve --workers`` share the traffic).

One key's hits are counted and extended under a lock on that key: PostgreSQL a transaction-scoped advisory
lock derived from (bucket, key); SQLite's writers are serialised already (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
import random

from sqlalchemy import Connection, bindparam, delete, func, insert, select

from optline.adapters.db.tables import rate_limit_hits as hits

# Expired rows of keys that are never seen again: swept by about one hit in SWEEP_EVERY.
SWEEP_EVERY = 500

_WINDOW = select(func.count(), func.min(hits.c.at)).where(
    (hits.c.bucket == bindparam("bucket"))
    & (hits.c.key == bindparam("key"))
    & (hits.c.at > bindparam("since"))
)
_EXPIRED_OF_KEY = delete(hits).where(
    (hits.c.bucket == bindparam("bucket"))
    & (hits.c.key == bindparam("key"))
    & (hits.c.at <= bindparam("since"))
)


def _lock_key(bucket: str, key: str) -> int:
    """A signed 64-bit advisory lock id for one (bucket, key)."""
    digest = hashlib.sha256(f"optline.rate_limit|{bucket}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def hit(conn: Connection, bucket: str, key: str, *, limit: int, window: float, now: float) -> float | None:
    """Count one request of ``key`` unless ``limit`` requests were counted in the last ``window`` seconds:
    None when allowed (and counted), else the seconds until the oldest counted request leaves the window.
    Run it in a write transaction (db.transaction())."""
    key = key[:100]
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_lock_key(bucket, key))))
    since = now - window
    params = {"bucket": bucket, "key": key, "since": since}
    conn.execute(_EXPIRED_OF_KEY, params)
    count, oldest = conn.execute(_WINDOW, params).one()
    if count >= limit:
        return max(0.0, float(oldest) + window - now)
    conn.execute(insert(hits).values(bucket=bucket, key=key, at=now, expires=now + window))
    if random.randrange(SWEEP_EVERY) == 0:
        conn.execute(delete(hits).where(hits.c.expires <= now))
    return None
