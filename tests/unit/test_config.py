from __future__ import annotations

import pytest
from pydantic import ValidationError

from optline.config import Settings


def test_development_has_no_key_in_the_code() -> None:
    # Unset: the installation generates its own on first start (tests/integration/test_installation_secret.py).
    assert Settings(env="development").secret_key is None


def test_production_demands_an_explicit_key() -> None:
    with pytest.raises(ValidationError, match="OPTLINE_SECRET_KEY is unset"):
        Settings(env="production")


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("dev-insecure-change-me", "published default"),
        ("changeme", "published default"),
        ("", "unset"),
        ("short-but-not-default", "at least 32 characters"),
        ("a" * 32, "1 distinct characters"),
        ("ab" * 24, "2 distinct characters"),
        ("0123456789" * 2 + "abcdefgh", "at least 32 characters"),
    ],
)
def test_production_refuses_default_short_or_low_entropy_keys(secret: str, why: str) -> None:
    with pytest.raises(ValidationError, match="OPTLINE_SECRET_KEY") as refused:
        Settings(env="production", secret_key=secret)
    assert why in str(refused.value)


@pytest.mark.parametrize(
    "secret", ["kT3v9QmZ2xLr8WpN4bYc6HdJ1sFgA7eU0oXi5", "3f9a0c7e12b4d6a8e0f1c3b5d7a9e2f4"]
)
def test_production_accepts_a_random_key(secret: str) -> None:
    Settings(env="production", secret_key=secret)


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTLINE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("OPTLINE_DEFAULT_REGION", "FR")
    s = Settings()
    assert (s.database_url, s.default_region, s.is_sqlite) == ("postgresql+psycopg://u@h/db", "FR", False)


def test_secrets_are_not_printed() -> None:
    s = Settings(secret_key="super-secret-value-123", twilio_auth_token="tok-abcdef")
    assert "super-secret-value-123" not in repr(s) and "tok-abcdef" not in repr(s)


def test_logs_are_json_outside_development_unless_chosen() -> None:
    assert Settings(env="development").effective_log_format == "text"
    assert Settings(env="test").effective_log_format == "json"
    assert Settings(env="development", log_format="json").effective_log_format == "json"
    with pytest.raises(ValidationError, match="log_format"):
        Settings(log_format="yaml")  # type: ignore[arg-type]


def test_an_unset_public_url_follows_the_served_address_outside_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPTLINE_PUBLIC_URL", raising=False)
    assert Settings(env="development").public_url_when_serving("127.0.0.1", 8001) == (
        "http://127.0.0.1:8001",
        None,
    )
    assert Settings(env="test").public_url_when_serving("0.0.0.0", 9000) == ("http://127.0.0.1:9000", None)
    url, warning = Settings(env="production", secret_key="k" * 20 + "abcdefghijkl").public_url_when_serving(
        "0.0.0.0", 8000
    )
    assert url == "http://127.0.0.1:8000" and warning and "OPTLINE_PUBLIC_URL is not set" in warning


def test_a_loopback_public_url_on_another_port_is_kept_but_named_in_a_warning() -> None:
    s = Settings(public_url="http://127.0.0.1:8000")
    url, warning = s.public_url_when_serving("127.0.0.1", 8001)
    assert url == "http://127.0.0.1:8000"
    assert warning and "listens on http://127.0.0.1:8001" in warning and "OPTLINE_PUBLIC_URL=" in warning
    assert s.public_url_when_serving("127.0.0.1", 8000) == ("http://127.0.0.1:8000", None)
    # A real host name (behind a proxy, on 443) is never second-guessed.
    assert Settings(public_url="https://sms.acme.example").public_url_when_serving("0.0.0.0", 8000) == (
        "https://sms.acme.example",
        None,
    )
