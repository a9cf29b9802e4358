"""The personal one-tap opt-out link: ``<public url>/u/<token>``.

Tokens are random (not derived from ids, so not enumerable), 10 URL-safe characters (~60 bits; cheap in
SMS characters), stored on the message row they were sent in: the token identifies contact, program and
message. GET on the link never changes consent (invariant 5); only the page's POST does.
"""

from __future__ import annotations

import re
import secrets

TOKEN_LENGTH = 10
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O/1/l/I: read aloud safely
TOKEN_PATTERN = re.compile(rf"^[{_ALPHABET}]{{{TOKEN_LENGTH}}}$")


def new_token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))


def is_well_formed(token: str) -> bool:
    return bool(TOKEN_PATTERN.match(token))


def optout_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/u/{token}"
