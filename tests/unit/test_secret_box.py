"""adapters/secret_box.py: encryption at rest of secrets the installation must use again."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from optline.adapters.secret_box import PREFIX, SecretBox, SecretBoxError, fernet_key
from optline.config import Settings

KEY = "kT3v9QmZ2xLr8WpN4bYc6HdJ1sFgA7eU0oXi5"
OLD = "3f9a0c7e12b4d6a8e0f1c3b5d7a9e2f4aa"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_round_trip_and_every_seal_differs() -> None:
    box = SecretBox(KEY)
    first, second = box.seal(SECRET), box.seal(SECRET)
    assert first.startswith(PREFIX) and first != second  # a fresh IV each time: equal secrets look different
    assert SECRET not in first and SECRET.removeprefix("whsec_") not in first
    assert box.open(first, what="x") == box.open(second, what="x") == SECRET
    assert box.is_current(first)


def test_the_encryption_key_is_derived_not_the_secret_key_itself() -> None:
    derived = base64.urlsafe_b64decode(fernet_key(KEY))
    assert len(derived) == 32 and KEY.encode()[:32] != derived
    assert fernet_key(KEY) != fernet_key(OLD)
    # Anyone holding the secret key can open it with the documented derivation (e.g. a recovery script).
    token = SecretBox(KEY).seal(SECRET).removeprefix(PREFIX)
    assert Fernet(fernet_key(KEY)).decrypt(token.encode()).decode() == SECRET


def test_rotation_with_the_old_key_listed() -> None:
    sealed_old = SecretBox(OLD).seal(SECRET)
    box = SecretBox(KEY, previous=[OLD])
    assert box.open(sealed_old, what="x") == SECRET and not box.is_current(sealed_old)
    rotated = box.rotate(sealed_old, what="x")
    assert box.is_current(rotated) and SecretBox(KEY).open(rotated, what="x") == SECRET
    with pytest.raises(SecretBoxError):
        SecretBox(OLD).open(rotated, what="x")  # under the new key only


def test_a_wrong_key_is_a_clear_error_without_the_value_or_a_chained_traceback() -> None:
    sealed = SecretBox(OLD).seal(SECRET)
    with pytest.raises(SecretBoxError) as refused:
        SecretBox(KEY).open(sealed, what="the signing secret of webhook endpoint 7")
    message = str(refused.value)
    assert message.startswith("the signing secret of webhook endpoint 7 cannot be decrypted")
    assert "OPTLINE_PREVIOUS_SECRET_KEYS" in message and "optline secrets rotate" in message
    for leaked in (SECRET, sealed, KEY, OLD):
        assert leaked not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    with pytest.raises(SecretBoxError, match="1 key"):
        SecretBox(KEY, previous=["another-old-key"]).open(sealed, what="x")
    with pytest.raises(SecretBoxError):  # a damaged value is the same clear error
        SecretBox(OLD).open(sealed[:-5] + "AAAAA", what="x")


def test_legacy_clear_text_is_read_as_is_and_rotated_into_a_sealed_value() -> None:
    box = SecretBox(KEY)
    assert box.open(SECRET, what="x") == SECRET and not box.is_current(SECRET)
    sealed = box.rotate(SECRET, what="x")
    assert sealed.startswith(PREFIX) and box.open(sealed, what="x") == SECRET


def test_previous_keys_setting() -> None:
    s = Settings(env="test", previous_secret_keys=f" {OLD} ,, other-old-key ")
    assert s.previous_secret_key_values() == [OLD, "other-old-key"]
    assert Settings(env="test").previous_secret_key_values() == []
    assert OLD not in repr(s)  # a SecretStr: not in a settings dump or a traceback of one


def test_a_previous_key_with_a_comma_is_listed_as_a_json_array_and_still_decrypts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A key chosen by hand may hold a comma; split on commas it would be two keys that decrypt nothing.
    old = "hand-chosen, with a comma " + OLD
    sealed = SecretBox(old).seal(SECRET)
    monkeypatch.setenv("OPTLINE_PREVIOUS_SECRET_KEYS", json.dumps([old, "another-old-key"]))
    s = Settings(env="test")
    assert s.previous_secret_key_values() == [old, "another-old-key"]
    assert SecretBox(KEY, previous=s.previous_secret_key_values()).open(sealed, what="x") == SECRET


@pytest.mark.parametrize("raw", ['["unclosed', "[1, 2]", '["ok", null]'])
def test_a_malformed_json_list_of_previous_keys_is_refused_at_start_without_quoting_it(raw: str) -> None:
    with pytest.raises(ValidationError, match="JSON array of strings") as refused:
        Settings(env="test", previous_secret_keys=raw)
    assert raw not in str(refused.value)


def test_a_refused_setting_never_quotes_the_secrets_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    # The error is printed at start, into the service's log: pydantic quotes a model's input by default.
    weak = "short-but-secret-value"
    monkeypatch.setenv("OPTLINE_TWILIO_AUTH_TOKEN", "twilio-token-" + OLD)
    monkeypatch.setenv("OPTLINE_SECRET_KEY", weak)
    with pytest.raises(ValidationError, match="at least 32 characters") as refused:
        Settings(env="production")
    assert weak not in str(refused.value) and OLD not in str(refused.value)
    assert "short-but" not in str(refused.value)  # not even the start of it


@pytest.mark.parametrize("key", ["dev-insecure-change-me", "changeme", "", "short"])
def test_a_default_key_is_still_refused_outside_development_with_previous_keys_set(key: str) -> None:
    # The encryption key derives from OPTLINE_SECRET_KEY: a published one would encrypt nothing. Listing a
    # strong previous key changes nothing.
    with pytest.raises(ValidationError, match="OPTLINE_SECRET_KEY"):
        Settings(env="production", secret_key=key, previous_secret_keys=KEY)
