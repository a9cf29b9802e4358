from datetime import UTC, datetime

from optline.domain import compose, lint, segments
from optline.domain.optout_links import SAMPLE_TOKEN, TOKEN_LENGTH

URL = "https://texts.acme-coffee.example"


def codes(result: lint.LintResult, level: str) -> set[str]:
    return {f.code for f in result.findings if f.level == level}


def test_clean_template() -> None:
    result = lint.lint(
        "Acme: hi {{ first_name }}! Reply STOP to opt out.",
        brand="Acme",
        settings={},
        known_fields={"first_name"},
        public_url=URL,
    )
    assert result.ok and not result.findings and result.segments and result.segments.segments == 1


def test_missing_brand_and_optout_are_warnings() -> None:
    result = lint.lint("Big sale today", brand="Acme", settings={}, known_fields=(), public_url=URL)
    assert result.ok and codes(result, "warning") == {"missing_brand", "missing_optout"}


def test_errors_unknown_field_shortener_and_segments() -> None:
    result = lint.lint(
        "Acme {{ nickname }} see bit.ly/x STOP", brand="Acme", settings={}, known_fields=(), public_url=URL
    )
    assert codes(result, "error") == {"unknown_field", "link_shortener"}
    long = lint.lint(
        "Acme " + "x" * 500 + " STOP",
        brand="Acme",
        settings={"max_segments": 2},
        known_fields=(),
        public_url=URL,
    )
    assert codes(long, "error") == {"too_many_segments"}


def test_ucs2_warning_and_quiet_hours_window() -> None:
    result = lint.lint(
        "Acme: it\u2019s on. STOP",
        brand="Acme",
        settings={},
        known_fields=(),
        public_url=URL,
        send_at=datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
        audience_zones=["America/New_York", "America/Los_Angeles"],
    )
    assert codes(result, "warning") == {"ucs2", "quiet_hours"}
    assert "America/Los_Angeles" in next(f.message for f in result.findings if f.code == "quiet_hours")


def test_syntax_error_is_reported() -> None:
    result = lint.lint("Acme {{ oops", brand="Acme", settings={}, known_fields=(), public_url=URL)
    assert codes(result, "error") == {"syntax"}


def test_segment_estimate_counts_the_personal_link_at_its_real_length() -> None:
    # 100 characters of text: one segment with the STOP sentence alone, two once the link is added. The
    # estimate measures exactly what dispatch sends (compose with a token of the real length).
    template = "Acme: " + "x" * 94
    with_link = lint.lint(template, brand="Acme", settings={}, known_fields=(), public_url=URL)
    without = lint.lint(
        template, brand="Acme", settings={"optout_link": False}, known_fields=(), public_url=URL
    )
    assert without.segments and without.segments.segments == 1
    assert with_link.segments and with_link.segments.segments == 2
    sent = compose.compose(
        template,
        brand="Acme",
        program_name="p",
        phone="+14155550100",
        attributes={},
        locale=None,
        settings={},
        marketing=True,
        first_this_month=True,
        public_url=URL,
        optout_token="zZ9" * 3 + "q",
    ).body
    assert segments.count(sent) == with_link.segments and len(SAMPLE_TOKEN) == TOKEN_LENGTH
    # A longer public URL costs more: the figure follows OPTLINE_PUBLIC_URL.
    longer = lint.lint(
        "Acme: " + "x" * 60, brand="Acme", settings={}, known_fields=(), public_url=URL + "/" + "p" * 40
    )
    assert (
        longer.segments
        and longer.segments.units
        == len("Acme: " + "x" * 60)
        + len(". Reply STOP to opt out or tap ")
        + len(URL)
        + 41
        + len("/u/")
        + TOKEN_LENGTH
    )


def test_missing_optout_warning_names_the_link_when_it_is_on() -> None:
    on = lint.lint("Acme sale", brand="Acme", settings={}, known_fields=(), public_url=URL)
    off = lint.lint(
        "Acme sale", brand="Acme", settings={"optout_link": False}, known_fields=(), public_url=URL
    )
    assert "or tap <link>" in next(f.message for f in on.findings if f.code == "missing_optout")
    assert "or tap" not in next(f.message for f in off.findings if f.code == "missing_optout")


def test_quiet_hours_warning_uses_the_programs_window() -> None:
    at = datetime(2026, 11, 26, 13, 30, tzinfo=UTC)  # 8:30 in New York: inside the law's window
    settings = {"quiet_hours": {"start": "09:00", "end": "20:00"}}
    law = lint.lint(
        "Acme: STOP",
        brand="Acme",
        settings={},
        known_fields=(),
        public_url=URL,
        send_at=at,
        audience_zones=["America/New_York"],
    )
    narrow = lint.lint(
        "Acme: STOP",
        brand="Acme",
        settings=settings,
        known_fields=(),
        public_url=URL,
        send_at=at,
        audience_zones=["America/New_York"],
    )
    assert "quiet_hours" not in codes(law, "warning")
    assert "deferred to 09:00 local" in next(f.message for f in narrow.findings if f.code == "quiet_hours")
