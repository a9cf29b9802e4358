"""``optline classify`` and ``optline inbound simulate`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support.cli import CREATE_DEALS


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optline", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_classify_reads_file_or_stdin(tmp_path: Path) -> None:
    env = {**os.environ}
    lines = ["STOP", "I'll stop by the store later", "dejen de mandarme mensajes", "no", "HELP", ""]
    out = run(env, "classify", stdin="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["intent"] for r in results] == ["optout", "other", "optout", "optout", "help", "other"]
    assert results[3]["review"] is True and results[2]["language"] == "es"
    assert set(results[0]) == {"text", "intent", "confidence", "language", "reason", "review"}
    f = tmp_path / "replies.txt"
    f.write_text("ARRÊT\nSTART\n", encoding="utf-8")
    from_file = [json.loads(line) for line in run(env, "classify", str(f)).stdout.splitlines()]
    assert [(r["intent"], r["language"]) for r in from_file] == [("optout", "fr"), ("optin", "en")]
    missing = run(env, "classify", str(tmp_path / "nope.txt"))
    assert missing.returncode != 0 and "nope.txt" in missing.stderr


def test_inbound_simulate_goes_through_the_webhook_path(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'optline.db'}"
    env = {**os.environ, "OPTLINE_DATABASE_URL": db, "COLUMNS": "200"}
    assert run(env, "init").returncode == 0
    assert run(env, *CREATE_DEALS).returncode == 0
    out = run(
        env,
        "inbound",
        "simulate",
        "--from",
        "+14155550134",
        "--to",
        "+14155550100",
        "--body",
        "START",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["intent"] == "optin"
    out = run(
        env,
        "inbound",
        "simulate",
        "--from",
        "+14155550134",
        "--to",
        "+14155550100",
        "--body",
        "stop pls",
        "--json",
    )
    assert json.loads(out.stdout)["intent"] == "optout"
    engine = create_engine(db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM subscriptions")).scalar_one() == "unsubscribed"
        assert (
            conn.execute(text("SELECT count(*) FROM simulator_messages WHERE direction = 'in'")).scalar() == 2
        )
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM messages ORDER BY id"))]
        assert kinds == ["confirmation", "confirmation"]
        assert (
            conn.execute(text("SELECT count(*) FROM inbound_messages WHERE provider = 'simulator'")).scalar()
            == 2
        )
    engine.dispose()
