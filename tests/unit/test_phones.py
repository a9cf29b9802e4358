from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optline.domain.phones import (
    InvalidPhoneNumber,
    normalize,
    normalize_sender,
    normalize_short_code,
    parse_phone,
    read_sender,
)


@pytest.mark.parametrize(
    "raw",
    [
        "(415) 555-0134",
        "415.555.0134",
        "+1 415 555 0134",
        "14155550134",
        "  415 555 0134 ",
        "+1-415-555-0134",
    ],
)
def test_messy_us_formats_normalise_to_e164(raw: str) -> None:
    assert normalize(raw) == "+14155550134"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("", "empty"), ("abc", "letters"), ("12345", "digits"), ("+1 999 555 0134", "not a valid number")],
)
def test_invalid_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=reason):
        parse_phone(raw)


def test_number_fixes_time_zone_and_state() -> None:
    fl = parse_phone("+1 305 555 0100")
    assert (fl.time_zone, fl.us_state, fl.sms_capable) == ("America/New_York", "FL", True)
    assert parse_phone("(405) 555-1234").us_state == "OK"
    assert parse_phone("+44 20 7183 8750").number_type == "fixed_line"
    assert not parse_phone("+44 20 7183 8750").sms_capable
    assert parse_phone("+33 6 12 34 56 78").number_type == "mobile"


def test_default_region_applies_to_national_numbers() -> None:
    assert normalize("06 12 34 56 78", "FR") == "+33612345678"


us_numbers = st.builds(
    lambda area, exch, line: f"{area}{exch}{line:04d}",
    st.sampled_from(["415", "212", "305", "405", "410", "617", "713"]),
    st.integers(200, 999).map(str),
    st.integers(0, 9999),
)
formats = st.sampled_from(
    [
        lambda d: f"({d[:3]}) {d[3:6]}-{d[6:]}",
        lambda d: f"{d[:3]}.{d[3:6]}.{d[6:]}",
        lambda d: f"+1 {d[:3]} {d[3:6]} {d[6:]}",
        lambda d: f"1{d}",
        lambda d: f"  {d}  ",
    ]
)


@given(us_numbers, formats, formats)
def test_every_spelling_of_a_number_gives_the_same_e164(digits: str, f1, g1) -> None:  # type: ignore[no-untyped-def]
    try:
        expected = normalize(digits)
    except InvalidPhoneNumber:
        return  # an unassigned exchange: every spelling is invalid, which the next assertion checks
    assert normalize(f1(digits)) == expected == normalize(g1(digits))
    assert expected.startswith("+1") and len(expected) == 12


@given(st.text(max_size=30))
def test_parse_never_raises_anything_but_invalid_phone_number(text: str) -> None:
    try:
        phone = parse_phone(text)
    except InvalidPhoneNumber:
        return
    assert phone.e164.startswith("+")


@given(
    st.integers(min_value=2_000_000_000, max_value=9_999_999_999), st.sampled_from(["US", "GB", "FR", "BR"])
)
def test_fast_path_agrees_with_phonenumbers(national: int, region: str) -> None:
    """The single-region-lookup parse gives the same verdict, E.164 and type as phonenumbers' public API."""
    import phonenumbers

    raw = str(national) if region == "US" else f"+{phonenumbers.country_code_for_region(region)}{national}"
    number = phonenumbers.parse(raw, "US")
    expected_valid = phonenumbers.is_possible_number(number) and phonenumbers.is_valid_number(number)
    try:
        phone = parse_phone(raw)
    except InvalidPhoneNumber:
        assert not expected_valid
        return
    assert expected_valid
    assert phone.e164 == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert phone.region == phonenumbers.region_code_for_number(number)
    assert (
        phone.number_type == phonenumbers.PhoneNumberType.to_string(phonenumbers.number_type(number)).lower()
    )


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("+1 415 555 0100", "+14155550100"),
        ("+44 7911 123456", "+447911123456"),
        ("12345", "12345"),
        (" 123456 ", "123456"),
    ],
)
def test_a_sender_is_stored_as_e164_or_as_a_short_codes_digits(raw: str, stored: str) -> None:
    assert normalize_sender(raw) == stored


@pytest.mark.parametrize("raw", ["hello", "123", "1234567", "", "+1 999 555 0100"])
def test_a_sender_that_is_neither_is_refused_naming_it(raw: str) -> None:
    with pytest.raises(
        InvalidPhoneNumber, match=re.escape(f"sender {raw.strip()!r} is neither a phone number")
    ):
        normalize_sender(raw)


def test_short_code_field_takes_five_or_six_digits_only() -> None:
    assert normalize_short_code("87654") == "87654"
    with pytest.raises(InvalidPhoneNumber, match="short code '8765' must be 5 or 6 digits"):
        normalize_short_code("8765")


@pytest.mark.parametrize(
    ("to", "stored"),
    [
        ("+14155550100", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("447911123456", "+447911123456"),
        ("12345", "12345"),
        ("AcmeCoffee", None),
    ],
)
def test_the_number_an_inbound_message_was_sent_to_reads_as_a_stored_sender(
    to: str, stored: str | None
) -> None:
    # Vonage and Plivo post international numbers without a '+' (see domain/phones.read_sender).
    assert read_sender(to) == stored


# parse_phone reads the common North American spellings without phonenumbers.parse; it must agree with it.
_SPELLINGS = ["({a}) {e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}", "1{a}{e}{l}", "{a}-{e}-{l}", "+1({a}){e}-{l}",
              "1 {a} {e} {l}", "{a}{e}{l}", "+1{a}{e}{l}", "1-{a}-{e}-{l}"]  # fmt: skip


@given(
    area=st.sampled_from(["415", "212", "416", "787", "604", "800", "900", "555", "211", "999", "242"]),
    exchange=st.integers(100, 999),
    line=st.integers(0, 9999),
    spelling=st.sampled_from(_SPELLINGS),
    region=st.sampled_from(["US", "CA", "GB", "DE"]),
)
def test_the_north_american_fast_path_agrees_with_phonenumbers(
    area: str, exchange: int, line: int, spelling: str, region: str
) -> None:
    from optline.domain import phones

    text = spelling.format(a=area, e=exchange, l=f"{line:04d}")

    def outcome() -> object:
        try:
            return phones.parse_phone(text, region)
        except InvalidPhoneNumber as exc:
            return str(exc)

    fast = outcome()
    real, phones._nanp_fast = phones._nanp_fast, lambda text, region: None  # type: ignore[assignment]
    try:
        slow = outcome()
    finally:
        phones._nanp_fast = real
    assert fast == slow


# parse_phone classifies North American numbers once per exchange (NPA-NXX) where the metadata's patterns
# allow it (phones.decided_by_head). These tests hold it to phonenumbers' own per-number classification.
def _uncached(text: str, region: str) -> object:
    """parse_phone's outcome with both shortcuts off: phonenumbers.parse and the per-number type."""
    from optline.domain import phones

    fast, fixed = phones._nanp_fast, phones._type_fixed_by_exchange
    phones._nanp_fast = lambda text, region: None  # type: ignore[assignment]
    phones._type_fixed_by_exchange = lambda region: False  # type: ignore[assignment]
    try:
        return _outcome(text, region)
    finally:
        phones._nanp_fast, phones._type_fixed_by_exchange = fast, fixed


def _outcome(text: str, region: str) -> object:
    try:
        return parse_phone(text, region)
    except InvalidPhoneNumber as exc:
        return str(exc)


@given(
    national=st.integers(min_value=2_000_000_000, max_value=9_999_999_999),
    spelling=st.sampled_from(_SPELLINGS),
    region=st.sampled_from(["US", "CA", "PR", "JM", "GB"]),
)
def test_the_type_by_exchange_agrees_with_phonenumbers_for_any_north_american_number(
    national: int, spelling: str, region: str
) -> None:
    digits = str(national)
    text = spelling.format(a=digits[:3], e=digits[3:6], l=digits[6:])
    assert _outcome(text, region) == _uncached(text, region)


def test_the_type_by_exchange_agrees_with_phonenumbers_on_the_benchmark_file(tmp_path: Path) -> None:
    from bench.import_contacts import make_csv

    path = tmp_path / "contacts.csv"
    make_csv(path, 20_000)
    with path.open(encoding="utf-8-sig", newline="") as f:
        numbers = [row[0] for row in csv.reader(f, delimiter=";")][1:]
    assert len(numbers) == 20_000
    outcomes = [(_outcome(n, "US"), _uncached(n, "US")) for n in numbers]
    assert all(cached == uncached for cached, uncached in outcomes)
    assert sum(isinstance(cached, str) for cached, _ in outcomes) > 100  # the file's bad numbers


def test_areas_of_one_region_keep_their_own_types() -> None:
    # Cached per (region, exchange): a toll-free or premium exchange never borrows a neighbour's type.
    from optline.domain import phones

    assert phones._type_fixed_by_exchange("US")
    phones_ = [_outcome(f"({area}) 201-0134", "US") for area in ("212", "800", "900")]
    assert [p.number_type for p in phones_] == ["fixed_line_or_mobile", "toll_free", "premium_rate"]  # type: ignore[attr-defined]
    assert phones_ == [_uncached(f"({area}) 201-0134", "US") for area in ("212", "800", "900")]


@pytest.mark.parametrize(
    ("pattern", "decided"),
    [
        (r"[2-9]\d{9}|3\d{6}", True),  # the 7-digit alternative never matches ten digits
        (r"5(?:2\d{8}|00[2-9]\d{6})", True),  # common prefix factored out of the alternatives
        (r"(?:2(?:0[1-35-9]|1[02-9]))[2-9]\d{6}", True),
        (r"\d{6}[2-9]\d{3}", False),  # the seventh digit matters
        (r"\d{6}(?:\d{4}|\d{3})", False),  # not a fixed width
        (r"(?=\d{9}5)\d{10}", False),  # a lookahead can read the tail
        (r"5(?:2\d{8}|00[2-9]\d{3}[2-9]\d{2})", False),  # one alternative's tail is too short
    ],
)
def test_a_pattern_is_decided_by_its_head_only_when_its_tail_is_any_digits(
    pattern: str, decided: bool
) -> None:
    from optline.domain.phones import decided_by_head

    assert decided_by_head(pattern, 10, 6) is decided
