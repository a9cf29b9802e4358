"""Dashboard operators: create, authenticate, change password, and their sign-in sessions.

Passwords are stored as argon2id hashes. Sessions are rows (``user_sessions``), not just a signed cookie, so
that signing out and changing the password end them on the server: a copied cookie is refused afterwards.
(A per-user generation number would do that too, but signing out of one browser would then sign out every
other one; a row per session ends exactly the sessions that should end.)"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from optline.adapters.clock import Clock
from optline.adapters.db.tables import user_sessions, users

MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


@cache
def dummy_hash() -> str:
    """Verifying against this when the user does not exist costs the same time as a real check, so response
    times do not tell an attacker which usernames exist. Made on first use, not at import: hashing costs
    ~0.2 s, which every CLI start would pay (the web app warms it before its first request)."""
    return _hasher.hash("not-a-real-password")


class UserError(ValueError):
    """A refused user operation; the message says why."""


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def get(conn: Connection, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return dict(row._mapping) if row else None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def create(
    conn: Connection, clock: Clock, username: str, password: str, *, must_change_password: bool = False
) -> dict[str, Any]:
    username = username.strip()
    if not username or len(username) > 100:
        raise UserError("username must be 1 to 100 characters")
    _check_password(password)
    if conn.execute(select(users.c.id).where(users.c.username == username)).first():
        raise UserError(f"a user named {username!r} already exists")
    row = conn.execute(
        insert(users)
        .values(
            username=username,
            password_hash=_hasher.hash(password),
            must_change_password=must_change_password,
            created_at=clock.now(),
        )
        .returning(*users.c)
    ).one()
    return dict(row._mapping)


def generate_password() -> str:
    """A one-time password that is easy to type from a terminal (no look-alike characters)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


def create_first_admin(conn: Connection, clock: Clock) -> tuple[str, str] | None:
    """On first run (no users at all): an ``admin`` with a one-time password, returned once; else None."""
    if count(conn):
        return None
    password = generate_password()
    create(conn, clock, "admin", password, must_change_password=True)
    return "admin", password


def authenticate(conn: Connection, clock: Clock, username: str, password: str) -> dict[str, Any] | None:
    row = conn.execute(select(users).where(users.c.username == username.strip())).first()
    try:
        _hasher.verify(row.password_hash if row else dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled_at is not None:
        return None
    values: dict[str, Any] = {"last_login_at": clock.now()}
    if _hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = _hasher.hash(password)
    conn.execute(update(users).where(users.c.id == row.id).values(**values))
    return {**dict(row._mapping), **values}


def change_password(conn: Connection, user_id: int, current: str, new: str) -> None:
    """Replace the password and end every session of the user (in the same transaction): whoever signed in
    with the old password, or holds a copy of a cookie, is signed out. The caller starts a new session for
    the browser that made the change."""
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise UserError("no such user")
    try:
        _hasher.verify(row.password_hash, current)
    except (VerificationError, InvalidHashError):
        raise UserError("the current password is not correct") from None
    if new == current:
        raise UserError("choose a new password that differs from the current one")
    _check_password(new)
    conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(password_hash=_hasher.hash(new), must_change_password=False)
    )
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(conn: Connection, clock: Clock, user_id: int, max_age: timedelta) -> str:
    """A new session for ``user_id``; returns the token the cookie carries (only its hash is stored)."""
    now = clock.now()
    conn.execute(delete(user_sessions).where(user_sessions.c.expires_at <= now))  # keeps the table small
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(user_sessions).values(
            token_hash=_token_hash(token), user_id=user_id, created_at=now, expires_at=now + max_age
        )
    )
    return token


def session_user(conn: Connection, clock: Clock, token: str) -> dict[str, Any] | None:
    """The user whose live session ``token`` is, or None (ended, expired or never existed)."""
    row = conn.execute(
        select(users)
        .join(user_sessions, user_sessions.c.user_id == users.c.id)
        .where(
            user_sessions.c.token_hash == _token_hash(token),
            user_sessions.c.expires_at > clock.now(),
            users.c.disabled_at.is_(None),
        )
    ).first()
    return dict(row._mapping) if row else None


def end_session(conn: Connection, token: str) -> None:
    conn.execute(delete(user_sessions).where(user_sessions.c.token_hash == _token_hash(token)))


def reset_password(conn: Connection, username: str) -> str:
    """An operator locked out (or whose one-time password was lost): a new one-time password, returned once."""
    row = conn.execute(select(users.c.id).where(users.c.username == username.strip())).first()
    if row is None:
        known = ", ".join(
            r.username for r in conn.execute(select(users.c.username).order_by(users.c.username))
        )
        raise UserError(f"no user named {username!r} (users: {known or 'none'})")
    password = generate_password()
    conn.execute(
        update(users)
        .where(users.c.id == row.id)
        .values(password_hash=_hasher.hash(password), must_change_password=True)
    )
    conn.execute(delete(user_sessions).where(user_sessions.c.user_id == row.id))  # like a password change
    return password


def list_all(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            users.c.id,
            users.c.username,
            users.c.created_at,
            users.c.last_login_at,
            users.c.disabled_at,
            users.c.must_change_password,
        ).order_by(users.c.username)
    )
    return [dict(r._mapping) for r in rows]


def add(conn: Connection, clock: Clock, username: str) -> str:
    """A new operator with a one-time password (returned once; replaced at their first sign-in)."""
    password = generate_password()
    create(conn, clock, username, password, must_change_password=True)
    return password


def set_disabled(
    conn: Connection, clock: Clock, user_id: int, disabled: bool, *, by_user_id: int
) -> dict[str, Any]:
    """Disable (or enable again) an operator. Disabling ends their sessions at once. Nobody disables
    themselves, so the dashboard always keeps someone who can sign in."""
    row = get(conn, user_id)
    if row is None:
        raise UserError(f"no user with id {user_id}")
    if disabled and user_id == by_user_id:
        raise UserError("you cannot disable yourself; ask another operator")
    conn.execute(
        update(users).where(users.c.id == user_id).values(disabled_at=clock.now() if disabled else None)
    )
    if disabled:
        conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))
    return row
