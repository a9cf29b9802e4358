"""`optline programs disclosure` and `optline signups list|expire` as subprocesses, on both engines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, select

from optline.adapters.db.tables import disclosure_versions

OPTLINE = str(Path(sys.executable).parent / "optline")
GOOD = (
    "Acme Coffee deals: up to 4 msgs/month. Msg & data rates may apply. Reply HELP for help, STOP to cancel. "
    "Consent is not a condition of purchase."
)


def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "COLUMNS": "200"}
    return subprocess.run([OPTLINE, *args], env=env, capture_output=True, text=True, timeout=60)


def test_disclosure_versions_and_signups_commands(db_url: str) -> None:
    assert (
        run(
            db_url,
            "programs",
            "create",
            "deals",
            "--brand",
            "Acme Coffee",
            "--double-opt-in",
            "--help-contact",
            "help@acme.example",
        ).returncode
        == 0
    )
    shown = run(db_url, "programs", "disclosure", "deals")
    assert shown.returncode == 0 and "current version 1" in shown.stdout and "24 h" in shown.stdout

    bad = run(db_url, "programs", "disclosure", "deals", "--text", "Acme Coffee deals! Reply STOP to stop.")
    assert bad.returncode == 1
    assert "lacks" in bad.stderr and "Msg & data rates may apply" in bad.stderr and "HELP" in bad.stderr

    good = run(db_url, "programs", "disclosure", "deals", "--text", GOOD, "--window-hours", "48")
    assert good.returncode == 0, good.stderr
    assert "new version 2" in good.stdout and "48 h" in good.stdout
    again = run(db_url, "programs", "disclosure", "deals", "--text", GOOD)
    assert "current version 2" in again.stdout  # the same text is not a new version

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(disclosure_versions).order_by(disclosure_versions.c.version)).all()
    engine.dispose()
    assert [(r.version, r.custom) for r in rows] == [(1, False), (2, True)] and rows[1].text == GOOD

    assert run(db_url, "programs", "disclosure", "nope").returncode == 1
    listed = run(db_url, "signups", "list", "--status", "pending")
    assert listed.returncode == 0
    assert run(db_url, "signups", "list", "--status", "bogus").returncode == 1
    expired = run(db_url, "signups", "expire")
    assert expired.returncode == 0 and "expired 0" in expired.stdout
