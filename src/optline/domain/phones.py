"""Phone numbers: parsing messy input into E.164, and what the number itself tells us.

Everything here is pure (``phonenumbers`` carries its metadata in the package; no I/O).
"""

from __future__ import annotations

import re
import re._constants as _c
import re._parser as _sre
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import _number_type_helper, national_significant_number

US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington": "WA", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
    "Washington D.C.": "DC", "District of Columbia": "DC",
}  # fmt: skip
_STATE_SUFFIX = re.compile(r",\s*([A-Z]{2})$")

# Types that can receive SMS. US numbers are usually FIXED_LINE_OR_MOBILE: the plan cannot tell, so allow.
SMS_CAPABLE = frozenset({"mobile", "fixed_line_or_mobile", "voip", "pager", "personal_number"})

_TYPE_NAMES = {value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper()}


class InvalidPhoneNumber(ValueError):
    """The input is not a valid phone number; the message says why."""


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    region: str | None
    number_type: str
    time_zones: tuple[str, ...]
    us_state: str | None

    @property
    def sms_capable(self) -> bool:
        return self.number_type in SMS_CAPABLE

    @property
    def time_zone(self) -> str | None:
        """The number's zone when it fixes exactly one; otherwise None (caller picks the strictest)."""
        return self.time_zones[0] if len(self.time_zones) == 1 else None


def parse_phone(raw: str, default_region: str = "US") -> Phone:
    """Parse ``(415) 555-0134``, ``415.555.0134``, ``+1 415 555 0134``, ``14155550134`` … into a Phone."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneNumber("empty phone number")
    if _LETTER.search(text.replace("ext", "")):
        raise InvalidPhoneNumber(f"phone number {text!r} contains letters")
    nsn = _nanp_fast(text, default_region.upper())
    number: phonenumbers.PhoneNumber | None = None
    if nsn is None:
        try:
            number = phonenumbers.parse(text, default_region.upper())
        except phonenumbers.NumberParseException as exc:
            raise InvalidPhoneNumber(f"cannot parse {text!r} as a phone number: {exc._msg}") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidPhoneNumber(f"{text!r} has the wrong number of digits for its country")
        nsn = national_significant_number(number)
        country_code = number.country_code or 0
    else:
        country_code = 1
    nanp = country_code == 1 and len(nsn) == 10
    if nanp:
        region = _nanp_region(nsn, number)
    else:
        assert number is not None  # only the North American spellings skip phonenumbers.parse
        region = phonenumbers.region_code_for_number(number)
    # is_valid_number() and number_type() each re-derive the region (the costly part of parsing a +1
    # number, which tries ~25 NANP regions); derive it once and classify against its metadata directly.
    if nanp and region is not None and _type_fixed_by_exchange(region):
        number_type = _nanp_type_by_exchange(region, nsn[:6])
    else:
        metadata = PhoneMetadata.metadata_for_region(region) if region else None
        number_type = _number_type_helper(nsn, metadata) if metadata else PhoneNumberType.UNKNOWN
    if number_type == PhoneNumberType.UNKNOWN:
        raise InvalidPhoneNumber(f"{text!r} is not a valid number (unassigned area or prefix)")
    zones, state = _zones_and_state(country_code, nsn, region)
    return Phone(
        e164=f"+{country_code}{nsn}",
        region=region,
        number_type=_TYPE_NAMES.get(number_type, "unknown"),
        time_zones=zones,
        us_state=state,
    )


_LETTER = re.compile(r"[A-Za-z]")
# The common North American spellings — (415) 555-0134, 415.555.0134, +1 415 555 0134, 14155550134 — read
# without phonenumbers.parse (half of an import's time per number). Only inputs parse() reads as exactly
# these ten digits match: a leading 1 is the national prefix only where the default region is NANP;
# anything else (extensions, other countries, odd spacing) takes the full path above.
_NANP_SPELLING = re.compile(r"(\+1|1)?[ .\-]?\(?([2-9]\d{2})\)?[ .\-]?(\d{3})[ .\-]?(\d{4})")
_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])


def _nanp_fast(text: str, default_region: str) -> str | None:
    """The national significant number (ten digits) of a common North American spelling, else None."""
    m = _NANP_SPELLING.fullmatch(text)
    if m is None or (m.group(1) != "+1" and default_region not in _NANP_REGIONS):
        return None
    return m.group(2) + m.group(3) + m.group(4)


# --- Number types by exchange -------------------------------------------------------------------------
# phonenumbers classifies a number by matching it against each type's pattern in its region's metadata
# (``_number_type_helper``: ~10 regular expressions, most of an import's time per number). In the North
# American plan those patterns decide by area code and exchange: every alternative that can match ten
# digits is a fixed-width head followed by at least four "any digit"s. Where that holds — checked here on
# the metadata itself, so a phonenumbers release that breaks it only turns the cache off — the type of
# NPA-NXX-XXXX is the type of NPA-NXX-0000, and it is computed once per exchange.
# Every description _number_type_helper reads.
_TYPE_DESCS = ("general_desc", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
               "uan", "voicemail", "fixed_line", "mobile")  # fmt: skip
_PLAIN = {_c.LITERAL, _c.NOT_LITERAL, _c.IN, _c.ANY, _c.BRANCH, _c.SUBPATTERN, _c.MAX_REPEAT, _c.MIN_REPEAT}
_ANY_DIGIT = [(_c.IN, [(_c.CATEGORY, _c.CATEGORY_DIGIT)])]


def _plain(items: Any) -> bool:
    """Only literals, classes, groups, alternatives and repeats (no lookaround, anchors, backreferences,
    atomic groups or possessive repeats): what the pattern matches is then what its parts match."""
    for op, av in items:
        if op not in _PLAIN:
            return False
        if op is _c.BRANCH and not all(_plain(alt) for alt in av[1]):
            return False
        if op is _c.SUBPATTERN and not _plain(av[3]):
            return False
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and not _plain(av[2]):
            return False
    return True


def _digit_tail(items: Any) -> int:
    """How many characters at the end of every match of ``items`` are certainly "any digit" (``\\d``,
    ``\\d{k}``, and after them a group or an alternation whose every branch ends so: the regular-expression
    parser factors common prefixes out of alternatives, ``5(?:2…\\d{4}|00\\d{6})``)."""
    tail = 0
    for op, av in reversed(list(items)):
        if op is _c.IN and av == _ANY_DIGIT[0][1]:
            tail += 1
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and av[0] == av[1] and list(av[2]) == _ANY_DIGIT:
            tail += av[0]
        elif op is _c.BRANCH:
            return tail + min(_digit_tail(alternative) for alternative in av[1])
        elif op is _c.SUBPATTERN:
            return tail + _digit_tail(av[3])
        else:
            break
    return tail


def decided_by_head(pattern: str, length: int, head: int) -> bool:
    """True when whether ``pattern`` fully matches a string of ``length`` digits depends only on its first
    ``head`` characters: each alternative that can be that long is exactly that long and ends in at least
    ``length - head`` "any digit"s (its fixed-width head then decides alone)."""
    parsed = _sre.parse(pattern)
    if not _plain(parsed):
        return False
    items = list(parsed)
    alternatives = items[0][1][1] if len(items) == 1 and items[0][0] is _c.BRANCH else [parsed]
    for alternative in alternatives:
        low, high = alternative.getwidth()
        if not low <= length <= high:
            continue  # it never matches a string of that length
        if low != high or _digit_tail(alternative) < length - head:
            return False
    return True


@lru_cache(maxsize=64)
def _type_fixed_by_exchange(region: str) -> bool:
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return False
    patterns = [
        d.national_number_pattern for d in (getattr(metadata, n) for n in _TYPE_DESCS) if d is not None
    ]
    return all(decided_by_head(p, 10, 6) for p in patterns if p)


@lru_cache(maxsize=65536)
def _nanp_type_by_exchange(region: str, exchange: str) -> int:
    metadata = PhoneMetadata.metadata_for_region(region)
    assert metadata is not None  # _type_fixed_by_exchange(region) found it
    return int(_number_type_helper(exchange + "0000", metadata))


@lru_cache(maxsize=2048)
def _nanp_region_by_area(area: str) -> str | None:
    return phonenumbers.region_code_for_number(phonenumbers.parse(f"+1{area}2{'0' * 6}"))


# Areas whose probe number above is not valid (e.g. no 200 exchange): the region found for a real number.
_NANP_REGION_SEEN: dict[str, str] = {}


def _nanp_region(nsn: str, number: phonenumbers.PhoneNumber | None) -> str | None:
    # In the North American plan the area code alone decides the region (US, CA, PR, …), so the costly
    # search over ~25 regions (80 µs) runs once per area, not once per number of an import.
    area = nsn[:3]
    region = _nanp_region_by_area(area) or _NANP_REGION_SEEN.get(area)
    if region is None:
        region = phonenumbers.region_code_for_number(
            number or phonenumbers.PhoneNumber(country_code=1, national_number=int(nsn))
        )
        if region is not None and len(_NANP_REGION_SEEN) < 1000:  # at most ~800 NANP area codes exist
            _NANP_REGION_SEEN[area] = region
    return region


@lru_cache(maxsize=65536)
def _zones_and_state_cached(prefix: str, region: str | None) -> tuple[tuple[str, ...], str | None]:
    number = phonenumbers.parse("+" + prefix + "0" * (11 - len(prefix)))
    return _lookup_zones_and_state(number, region)


def _zones_and_state(country_code: int, nsn: str, region: str | None) -> tuple[tuple[str, ...], str | None]:
    if country_code == 1 and len(nsn) == 10:
        # NANP time zones and states follow the area code (+ exchange for the few split areas): cacheable.
        return _zones_and_state_cached(f"1{nsn[:6]}", region)
    number = phonenumbers.parse(f"+{country_code}{nsn}")
    return _lookup_zones_and_state(number, region)


def _lookup_zones_and_state(
    number: phonenumbers.PhoneNumber, region: str | None
) -> tuple[tuple[str, ...], str | None]:
    zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown")
    return zones, (_us_state(number) if region == "US" else None)


def normalize(raw: str, default_region: str = "US") -> str:
    """E.164 for ``raw``, raising InvalidPhoneNumber with the reason."""
    return parse_phone(raw, default_region).e164


# US common short codes are 5 or 6 digits (CTIA Short Code Monitoring Handbook; usshortcodes.com).
_SHORT_CODE = re.compile(r"\d{5,6}")


def normalize_sender(raw: str, default_region: str = "US") -> str:
    """A sender as programs store it: E.164 for a phone number, the bare digits of a US short code.

    One form per sender, so an inbound message to ``+14155550100`` finds the program whose sender was typed
    as ``(415) 555-0100``. Raises InvalidPhoneNumber naming the value when it is neither.
    """
    text = (raw or "").strip()
    if _SHORT_CODE.fullmatch(text):
        return text
    try:
        return normalize(text, default_region)
    except InvalidPhoneNumber as exc:
        raise InvalidPhoneNumber(
            f"sender {text!r} is neither a phone number nor a 5–6 digit short code ({exc})"
        ) from None


def normalize_short_code(raw: str) -> str:
    text = (raw or "").strip()
    if not _SHORT_CODE.fullmatch(text):
        raise InvalidPhoneNumber(f"short code {text!r} must be 5 or 6 digits (a US short code)")
    return text


def read_sender(raw: str, default_region: str = "US") -> str | None:
    """The stored form of the number an inbound message was sent to, or None when it is neither a phone
    number nor a short code (an alphanumeric sender ID). Tries it as written in the default region, then
    with a '+': Vonage's ``to`` and Plivo's ``To`` carry international numbers without one
    (developer.vonage.com/en/messaging/sms/guides/inbound-sms, plivo.com/docs/messaging/api/message)."""
    text = (raw or "").strip()
    candidates = [text, f"+{text}"] if text.isdigit() and not _SHORT_CODE.fullmatch(text) else [text]
    for candidate in candidates:
        try:
            return normalize_sender(candidate, default_region)
        except InvalidPhoneNumber:
            continue
    return None


def preload() -> None:
    """Load now the data a first look-up loads lazily (the geocoder's and the time zones' tables for North
    American numbers, ~0.3 s of CPU): a server calls it before it takes requests, so that its first burst
    of replies does not wait for it (with ``serve --workers 4``, once in each process: 4 x 0.3 s inside
    the first seconds of a burst). Commands that parse no number keep their fast start."""
    parse_phone("+14155550123")


def _us_state(number: phonenumbers.PhoneNumber) -> str | None:
    # Imported here: its data costs ~0.5 s per process start, and lookups are cached per NANP prefix above.
    from phonenumbers import geocoder

    description = geocoder.description_for_number(number, "en")
    if description in US_STATES:
        return US_STATES[description]
    match = _STATE_SUFFIX.search(description)
    return match.group(1) if match else None
