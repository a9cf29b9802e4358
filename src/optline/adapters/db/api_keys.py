"""API keys: shown once, stored as a SHA-256 hash (the keys are 256-bit random, so no slow hash is needed)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from optline.adapters.db.tables import api_keys

PREFIX = "olk"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(conn: Connection, name: str, now: datetime) -> str:
    """Create a key and return it in full; only its hash is kept."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute(insert(api_keys).values(name=name, prefix=key_id, key_hash=_hash(secret), created_at=now))
    return f"{PREFIX}_{key_id}_{secret}"


def authenticate(conn: Connection, token: str, now: datetime) -> str | None:
    """The key's name when ``token`` is a live key, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == parts[1])).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, _hash(parts[2])):
        return None
    conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now))
    return str(row.name)


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every key, newest first, without its hash (what the dashboard lists)."""
    rows = conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.name,
            api_keys.c.prefix,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        ).order_by(api_keys.c.id.desc())
    )
    return [{**dict(r._mapping), "shown_as": f"{PREFIX}_{r.prefix}_…"} for r in rows]


def revoke(conn: Connection, key_id: int, now: datetime) -> dict[str, Any]:
    """Revoke a key: from now on it authenticates nothing. Revoking twice keeps the first time."""
    row = conn.execute(select(api_keys.c.name, api_keys.c.revoked_at).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise LookupError(f"no API key with id {key_id}")
    if row.revoked_at is None:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
    return {"id": key_id, "name": row.name}
