"""Pure rules behind the friendlier command line (issue 19): send times, template fallbacks, sentences, URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from optline.adapters.db.database import DatabaseUrlError, normalise_url
from optline.domain.compose import join_sentence, required_fields, template_fields
from optline.domain.dates import parse_when

NOW = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)  # 00:00 in New York
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("now", NOW),
        ("in 2 hours", datetime(2026, 11, 30, 7, 0, tzinfo=UTC)),
        ("in 30 min", datetime(2026, 11, 30, 5, 30, tzinfo=UTC)),
        ("tomorrow 10:00", datetime(2026, 12, 1, 15, 0, tzinfo=UTC)),
        ("Tomorrow at 9pm", datetime(2026, 12, 2, 2, 0, tzinfo=UTC)),
        ("today 18:30", datetime(2026, 11, 30, 23, 30, tzinfo=UTC)),
        ("2026-12-01 10:00", datetime(2026, 12, 1, 15, 0, tzinfo=UTC)),  # naive: the operator's zone
        ("2026-12-01T15:00:00Z", datetime(2026, 12, 1, 15, 0, tzinfo=UTC)),
    ],
)
def test_send_times_as_operators_type_them(typed: str, expected: datetime) -> None:
    assert parse_when(typed, NOW, NY) == expected


@pytest.mark.parametrize("typed", ["tomorow", "next week", "tomorrow 25:00", "13pm", ""])
def test_unreadable_send_times_name_the_accepted_formats(typed: str) -> None:
    with pytest.raises(ValueError, match="unrecognised time"):
        parse_when(typed, NOW, NY)


def test_a_default_makes_a_field_optional() -> None:
    assert required_fields("Hi {{ first_name }}") == {"first_name"}
    assert required_fields('Hi {{ first_name | default("there") }}') == set()
    assert required_fields('Hi {{ first_name | d("there") | title }}') == set()
    assert required_fields('{{ a | default("x") }} and {{ a }}') == {"a"}  # one bare use still needs it
    assert template_fields('Hi {{ first_name | default("there") }}') == {"first_name"}


@pytest.mark.parametrize(
    ("body", "joined"),
    [
        ("Hi Ann, 20% off today", "Hi Ann, 20% off today. Reply STOP to opt out."),
        ("Sale ends soon!", "Sale ends soon! Reply STOP to opt out."),
        ("Done.", "Done. Reply STOP to opt out."),
        ("Shop https://acme.example/s", "Shop https://acme.example/s\nReply STOP to opt out."),
        ("(today only)", "(today only). Reply STOP to opt out."),
    ],
)
def test_the_optout_instruction_joins_as_a_sentence(body: str, joined: str) -> None:
    assert join_sentence(body, "Reply STOP to opt out.") == joined


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://h/d", "postgresql+psycopg://h/d"),
        ("sqlite:///./optline.db", "sqlite:///./optline.db"),
    ],
)
def test_database_urls_other_tools_print_are_accepted(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["foo://x", "sqlite:/x.db", "sqlite://", "sqlite:///:memory:", "mysql://h/d"])
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(DatabaseUrlError, match="sqlite:///"):
        normalise_url(url)
