"""A real ``optline serve`` on a free port: a STOP signed by the twilio SDK unsubscribes before the 200."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from tests.support.server import serve

TOKEN = "e2e-twilio-auth-token-0123456789abcdef"
PERSON, SENDER = "+14155550134", "+14155550100"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "optline", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    db = f"sqlite:///{tmp_path / 'optline.db'}"
    settings = {"OPTLINE_TWILIO_AUTH_TOKEN": TOKEN, "OPTLINE_ENV": "development", "COLUMNS": "200"}
    env = {**os.environ, "OPTLINE_DATABASE_URL": db, **settings}
    cli(env, "init")
    cli(
        env,
        "programs",
        "create",
        "deals",
        "--brand",
        "Acme Coffee",
        "--sender",
        SENDER,
        "--help-contact",
        "help@acme.example",
    )
    csv = tmp_path / "list.csv"
    csv.write_text(f"phone,consented_at,consent_source\n{PERSON},2026-01-01,web form\n", encoding="utf-8")
    cli(env, "contacts", "import", str(csv), "--program", "deals")
    with serve(db, **settings) as running:
        yield running.url, {**env, "OPTLINE_PUBLIC_URL": running.url}


def status_of(env: dict[str, str]) -> str:
    engine = create_engine(env["OPTLINE_DATABASE_URL"])
    with engine.connect() as conn:
        value = conn.execute(text("SELECT status FROM subscriptions")).scalar_one()
    engine.dispose()
    return str(value)


def test_signed_stop_unsubscribes_before_the_200(server: tuple[str, dict[str, str]]) -> None:
    base, env = server
    assert status_of(env) == "subscribed"
    params = {"MessageSid": "SMe2e0000000000000000000000000001", "From": PERSON, "To": SENDER, "Body": "STOP",
              "AccountSid": "AC00000000000000000000000000000000", "NumMedia": "0"}  # fmt: skip
    url = f"{base}/webhooks/twilio/sms"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}

    forged = httpx.post(
        url, content=urlencode({**params, "From": "+14155550199"}), headers=headers, timeout=30
    )
    assert forged.status_code == 403

    response = httpx.post(url, content=urlencode(params), headers=headers, timeout=30)
    assert response.status_code == 200 and "<Response/>" in response.text
    assert status_of(env) == "unsubscribed"  # committed before the answer

    shown = cli(env, "contacts", "show", PERSON).stdout
    assert "opt out via sms keyword" in shown
