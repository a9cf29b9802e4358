from datetime import UTC, datetime

from optline.domain import lint


def codes(result: lint.LintResult, level: str) -> set[str]:
    return {f.code for f in result.findings if f.level == level}


def test_clean_template() -> None:
    result = lint.lint("Acme: hi {{ first_name }}! Reply STOP to opt out.", brand="Acme", settings={},
                       known_fields={"first_name"})  # fmt: skip
    assert result.ok and not result.findings and result.segments and result.segments.segments == 1


def test_missing_brand_and_optout_are_warnings() -> None:
    result = lint.lint("Big sale today", brand="Acme", settings={}, known_fields=())
    assert result.ok and codes(result, "warning") == {"missing_brand", "missing_optout"}


def test_errors_unknown_field_shortener_and_segments() -> None:
    result = lint.lint("Acme {{ nickname }} see bit.ly/x STOP", brand="Acme", settings={}, known_fields=())
    assert codes(result, "error") == {"unknown_field", "link_shortener"}
    long = lint.lint(
        "Acme " + "x" * 500 + " STOP", brand="Acme", settings={"max_segments": 2}, known_fields=()
    )
    assert codes(long, "error") == {"too_many_segments"}


def test_ucs2_warning_and_quiet_hours_window() -> None:
    result = lint.lint("Acme: it\u2019s on. STOP", brand="Acme", settings={}, known_fields=(),
                       send_at=datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
                       audience_zones=["America/New_York", "America/Los_Angeles"])  # fmt: skip
    assert codes(result, "warning") == {"ucs2", "quiet_hours"}
    assert "America/Los_Angeles" in next(f.message for f in result.findings if f.code == "quiet_hours")


def test_syntax_error_is_reported() -> None:
    result = lint.lint("Acme {{ oops", brand="Acme", settings={}, known_fields=())
    assert codes(result, "error") == {"syntax"}
