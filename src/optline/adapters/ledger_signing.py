"""Where the ledger's signing key and checkpoint log live: outside the database, by design.

The key is OPTLINE_LEDGER_SIGNING_KEY (a 32-byte Ed25519 seed, hex or base64) or a key file
(OPTLINE_LEDGER_SIGNING_KEY_FILE). In development and tests on SQLite, both the key file and the checkpoint
log default to files beside the database file and the key is generated on first use; in production a
missing key is refused (a fresh key would sign over whatever the database says now, vouching for a rewrite).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from nacl.signing import SigningKey

from optline.adapters.db.database import sqlite_path
from optline.config import Settings


class SigningKeyError(RuntimeError):
    """The signing key or the checkpoint log is missing or unusable; the message says what to set."""


def _beside_database(settings: Settings, suffix: str) -> Path | None:
    """A development default: ``<database>.<suffix>`` next to the SQLite file (None elsewhere)."""
    if settings.env == "production":
        return None
    db = sqlite_path(settings.database_url)
    return db.with_name(f"{db.stem}.{suffix}") if db else None


def key_file(settings: Settings) -> Path | None:
    if settings.ledger_signing_key_file:
        return Path(settings.ledger_signing_key_file).expanduser()
    return _beside_database(settings, "ledger-key")


def checkpoint_log(settings: Settings) -> str | None:
    """The checkpoint log: a file path or an http(s) URL; None when none is configured (nor defaulted)."""
    if settings.ledger_checkpoint_log:
        return settings.ledger_checkpoint_log
    path = _beside_database(settings, "checkpoints.jsonl")
    return str(path) if path else None


def decode_seed(text: str, where: str) -> SigningKey:
    text = text.strip()
    seed: bytes | None = None
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        try:
            seed = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            seed = None
    if seed is None or len(seed) != 32:
        raise SigningKeyError(
            f"{where} must be a 32-byte Ed25519 seed written as 64 hex characters or base64"
        )
    return SigningKey(seed)


def signing_key(settings: Settings, *, create: bool = True) -> SigningKey:
    """The key that signs checkpoints. ``create``: generate the key file on first use (never in production)."""
    if settings.ledger_signing_key is not None and settings.ledger_signing_key.get_secret_value().strip():
        return decode_seed(settings.ledger_signing_key.get_secret_value(), "OPTLINE_LEDGER_SIGNING_KEY")
    path = key_file(settings)
    if path is None:
        raise SigningKeyError(
            "no ledger signing key: set OPTLINE_LEDGER_SIGNING_KEY (e.g. `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`) or OPTLINE_LEDGER_SIGNING_KEY_FILE, kept outside the database"
        )
    if path.exists():
        return decode_seed(path.read_text(), f"the key file {path}")
    if settings.env == "production" or not create:
        raise SigningKeyError(f"the ledger signing key file {path} does not exist")
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: two processes starting at once end up
    # signing with the one key that won the link, and nobody ever reads a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.encode().hex() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return decode_seed(path.read_text(), f"the key file {path}")
    finally:
        tmp.unlink()
    return key


def public_key_hex(settings: Settings) -> str:
    """The verify key of the configured signing key, without generating one."""
    return signing_key(settings, create=False).verify_key.encode().hex()
