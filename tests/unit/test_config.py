from __future__ import annotations

import pytest
from pydantic import ValidationError

from optline.config import DEV_SECRET_KEY, Settings


def test_development_accepts_the_default_secret() -> None:
    assert Settings(env="development").secret_key.get_secret_value() == DEV_SECRET_KEY


@pytest.mark.parametrize("secret", [DEV_SECRET_KEY, "changeme", "", "short-but-not-default"])
def test_production_refuses_default_or_short_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="OPTLINE_SECRET_KEY"):
        Settings(env="production", secret_key=secret)


def test_production_accepts_a_real_secret() -> None:
    Settings(env="production", secret_key="x" * 48)


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTLINE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("OPTLINE_DEFAULT_REGION", "FR")
    s = Settings()
    assert (s.database_url, s.default_region, s.is_sqlite) == ("postgresql+psycopg://u@h/db", "FR", False)


def test_secrets_are_not_printed() -> None:
    s = Settings(secret_key="super-secret-value-123", twilio_auth_token="tok-abcdef")
    assert "super-secret-value-123" not in repr(s) and "tok-abcdef" not in repr(s)
