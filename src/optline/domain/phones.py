"""Phone numbers: parsing messy input into E.164, and what the number itself tells us.

Everything here is pure (``phonenumbers`` carries its metadata in the package; no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, geocoder
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
    if re.search(r"[A-Za-z]", text.replace("ext", "")):
        raise InvalidPhoneNumber(f"phone number {text!r} contains letters")
    number = _nanp_fast(text, default_region.upper())
    if number is None:
        try:
            number = phonenumbers.parse(text, default_region.upper())
        except phonenumbers.NumberParseException as exc:
            raise InvalidPhoneNumber(f"cannot parse {text!r} as a phone number: {exc._msg}") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidPhoneNumber(f"{text!r} has the wrong number of digits for its country")
    nsn = national_significant_number(number)
    country_code = number.country_code or 0
    region = _region(country_code, nsn, number)
    metadata = PhoneMetadata.metadata_for_region(region) if region else None
    # is_valid_number() and number_type() each re-derive the region (the costly part of parsing a +1
    # number, which tries ~25 NANP regions); derive it once and classify against its metadata directly.
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


# The common North American spellings — (415) 555-0134, 415.555.0134, +1 415 555 0134, 14155550134 — read
# without phonenumbers.parse (half of an import's time per number). Only inputs parse() reads as exactly
# these ten digits match: a leading 1 is the national prefix only where the default region is NANP;
# anything else (extensions, other countries, odd spacing) takes the full path above.
_NANP_SPELLING = re.compile(r"(\+1|1)?[ .\-]?\(?([2-9]\d{2})\)?[ .\-]?(\d{3})[ .\-]?(\d{4})")
_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])


def _nanp_fast(text: str, default_region: str) -> phonenumbers.PhoneNumber | None:
    m = _NANP_SPELLING.fullmatch(text)
    if m is None or (m.group(1) != "+1" and default_region not in _NANP_REGIONS):
        return None
    return phonenumbers.PhoneNumber(country_code=1, national_number=int(m.group(2) + m.group(3) + m.group(4)))


def _region(country_code: int, nsn: str, number: phonenumbers.PhoneNumber) -> str | None:
    if country_code == 1 and len(nsn) == 10:
        return _nanp_region(nsn[:3], number)
    return phonenumbers.region_code_for_number(number)


@lru_cache(maxsize=2048)
def _nanp_region_by_area(area: str) -> str | None:
    return phonenumbers.region_code_for_number(phonenumbers.parse(f"+1{area}2{'0' * 6}"))


# Areas whose probe number above is not valid (e.g. no 200 exchange): the region found for a real number.
_NANP_REGION_SEEN: dict[str, str] = {}


def _nanp_region(area: str, number: phonenumbers.PhoneNumber) -> str | None:
    # In the North American plan the area code alone decides the region (US, CA, PR, …), so the costly
    # search over ~25 regions (80 µs) runs once per area, not once per number of an import.
    region = _nanp_region_by_area(area) or _NANP_REGION_SEEN.get(area)
    if region is None:
        region = phonenumbers.region_code_for_number(number)
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


def _us_state(number: phonenumbers.PhoneNumber) -> str | None:
    description = geocoder.description_for_number(number, "en")
    if description in US_STATES:
        return US_STATES[description]
    match = _STATE_SUFFIX.search(description)
    return match.group(1) if match else None
