"""Secrets the installation keeps and must use again (outbound webhook signing secrets), encrypted at rest.

A signing secret cannot be hashed like a password or an API key: every delivery is signed with the secret
itself. So it is stored as ``v1:<Fernet token>`` (AES-128-CBC and HMAC-SHA256, from ``cryptography``) under a
key derived with HKDF-SHA256 from OPTLINE_SECRET_KEY. A copy of the database (a backup, a dump handed to
support) then holds no usable secret without the key, which lives in the environment.

- The ``info`` of the derivation names this purpose, so the encryption key is never the key that signs
  sessions and CSRF tokens, although both come from one setting.
- Rotation: OPTLINE_PREVIOUS_SECRET_KEYS lists the keys used before. The current key encrypts; every key
  decrypts (MultiFernet), so a value written under an old key stays readable until ``optline secrets rotate``
  re-encrypts it under the current one.
- A stored value without the ``v1:`` prefix is clear text from before encryption existed: it is read as it
  is (deliveries keep working) and ``optline secrets rotate`` encrypts it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1:"
_INFO = b"optline secrets at rest v1"


class SecretBoxError(Exception):
    """A stored secret that no configured key opens. The message says what to configure; it never carries
    the stored value or a key."""


def fernet_key(secret_key: str) -> bytes:
    """The Fernet key for one secret key (32 bytes from HKDF-SHA256, url-safe base64 as Fernet wants)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


class SecretBox:
    """Seal (encrypt under the current key) and open (decrypt under any configured key) stored secrets."""

    def __init__(self, current: str, previous: Iterable[str] = ()) -> None:
        if not current:
            raise ValueError("a secret box needs a secret key")
        keys: list[str] = []
        for key in (current, *previous):
            if key and key not in keys:
                keys.append(key)
        self._current = Fernet(fernet_key(current))
        self._current_only = MultiFernet([self._current])
        self._any = MultiFernet([Fernet(fernet_key(k)) for k in keys])
        self.key_count = len(keys)

    def seal(self, value: str) -> str:
        return PREFIX + self._current.encrypt(value.encode()).decode("ascii")

    def open(self, stored: str, *, what: str) -> str:
        """The clear value of ``stored`` (legacy clear text as it is); SecretBoxError naming ``what`` when no
        configured key opens it."""
        if not is_sealed(stored):
            return stored
        try:
            return self._any.decrypt(stored[len(PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            # `from None`: the chained InvalidToken adds nothing, and a traceback of it would print the token.
            raise SecretBoxError(self._unreadable(what)) from None

    def is_current(self, stored: str) -> bool:
        """Sealed under the current key (nothing for ``rotate`` to do)."""
        if not is_sealed(stored):
            return False
        try:
            self._current_only.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def rotate(self, stored: str, *, what: str) -> str:
        """``stored`` sealed under the current key: legacy clear text encrypted, an old key's value
        re-encrypted. SecretBoxError when no configured key opens it."""
        return self.seal(self.open(stored, what=what))

    def _unreadable(self, what: str) -> str:
        return (
            f"{what} cannot be decrypted with OPTLINE_SECRET_KEY"
            + (
                f" or the {self.key_count - 1} key(s) in OPTLINE_PREVIOUS_SECRET_KEYS"
                if self.key_count > 1
                else ""
            )
            + ": it was stored under another key. If OPTLINE_SECRET_KEY was changed, list the old key in "
            "OPTLINE_PREVIOUS_SECRET_KEYS (comma-separated) and run `optline secrets rotate`"
        )
