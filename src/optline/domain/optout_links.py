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


_SPACE = len(_ALPHABET) ** TOKEN_LENGTH  # ~3.0e17 tokens, under 2**64
_LIMIT = (1 << 64) // _SPACE * _SPACE  # draws at or above this are rejected: every token equally likely


def new_token() -> str:
    # One 64-bit draw per token instead of ten secrets.choice calls (made for every message handed over).
    while True:
        n = secrets.randbits(64)
        if n < _LIMIT:
            break
    n %= _SPACE
    chars = []
    for _ in range(TOKEN_LENGTH):
        n, digit = divmod(n, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(chars)


# A token of the real length for everything that predicts a message before it is sent (preview, lint, the
# dry run): the link it makes is as long as the one recipients get, so the segment count shown is the one sent.
SAMPLE_TOKEN = "AbCdEfGhJkMnPqRsTuVw"[:TOKEN_LENGTH]


def is_well_formed(token: str) -> bool:
    return bool(TOKEN_PATTERN.match(token))


def optout_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/u/{token}"
