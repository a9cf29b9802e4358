"""A program's customer-care contact: what its HELP reply points people to (CTIA: a toll-free number, an email
address or a website). "For help reply HELP" is no answer to someone who just replied HELP.

Pure: a contact is read once, when the program is created, and stored as it will be shown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from optline.domain.phones import InvalidPhoneNumber, normalize

_EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_BARE_SITE = re.compile(r"^(www\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(/\S*)?$")
KINDS = "a website (https://…), an email address or a phone number"


class SupportContactError(ValueError):
    """Not a contact a person could use; the message names the value and what is accepted."""


def read_support_contact(text: str | None, default_region: str = "US") -> str:
    """The contact as it will appear in the HELP reply: a URL or site, an email, or a number in E.164."""
    value = (text or "").strip()
    if not value:
        raise SupportContactError(f"a program needs a support contact for its HELP reply: {KINDS}")
    if len(value) > 200:
        raise SupportContactError(f"support contact is {len(value)} characters; at most 200")
    if value.lower().startswith(("http://", "https://")):
        parts = urlsplit(value)
        if parts.hostname and ("." in parts.hostname or parts.hostname == "localhost") and " " not in value:
            return value
        raise SupportContactError(f"support contact {value!r} is not a usable web address")
    if _EMAIL.match(value) or _BARE_SITE.match(value):
        return value
    try:
        return normalize(value, default_region)
    except InvalidPhoneNumber:
        raise SupportContactError(f"support contact {value!r} is not {KINDS}") from None
