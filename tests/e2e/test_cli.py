"""The ``optline`` command as a user runs it (a subprocess), on both engines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run(db_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "COLUMNS": "200", "OPTLINE_ENV": "development"}
    return subprocess.run(
        [sys.executable, "-m", "optline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_cli_walkthrough(db_url: str, tmp_path: Path) -> None:
    assert run(db_url, "init").returncode == 0
    created = run(
        db_url,
        "programs",
        "create",
        "deals",
        "--brand",
        "Acme Coffee",
        "--sender",
        "+14155550100",
        "--help-contact",
        "help@acme.example",
    )
    assert created.returncode == 0, created.stderr
    assert "Acme Coffee" in run(db_url, "programs", "list").stdout

    csv = tmp_path / "list.csv"
    csv.write_text(
        "phone,name,consented_at,consent_source\n(415) 555-0134,Ann,2024-01-01,web\nnope,Bob,,\n",
        encoding="utf-8",
    )
    imported = run(db_url, "contacts", "import", str(csv), "--program", "deals")
    assert imported.returncode == 0, imported.stderr
    assert "rejected" in imported.stdout and (tmp_path / "list.rejects.csv").exists()

    shown = run(db_url, "contacts", "show", "415.555.0134")
    assert "+14155550134" in shown.stdout and "opt in via import" in shown.stdout

    key = run(db_url, "apikey", "create", "crm")
    assert key.returncode == 0 and key.stdout.strip().splitlines()[-1].startswith("olk_")

    assert run(db_url, "ledger", "digest").returncode == 0
    verified = run(db_url, "ledger", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("contacts", "import", "missing.csv", "--program", "deals"), "does not exist"),
        (("contacts", "show", "415"), "wrong number of digits"),
        (
            (
                "programs",
                "create",
                "--help-contact",
                "help@acme.example",
                "x",
                "--brand",
                "B",
                "--scope",
                "galaxy",
            ),
            "--scope",
        ),
    ],
)
def test_user_mistakes_print_one_line_and_no_traceback(
    db_url: str, args: tuple[str, ...], message: str
) -> None:
    result = run(db_url, *args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_program_lists_the_known_ones(db_url: str, tmp_path: Path) -> None:
    run(db_url, "programs", "create", "--help-contact", "help@acme.example", "deals", "--brand", "Acme")
    csv = tmp_path / "a.csv"
    csv.write_text("phone\n4155550134\n", encoding="utf-8")
    result = run(db_url, "contacts", "import", str(csv), "--program", "dealz")
    assert result.returncode == 1 and "no program named 'dealz'" in result.stderr and "deals" in result.stderr


def test_production_refuses_default_secret(tmp_path: Path) -> None:
    env = {**os.environ, "OPTLINE_ENV": "production", "OPTLINE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    env.pop("OPTLINE_SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "optline", "init"], capture_output=True, text=True, env=env
    )
    assert (
        result.returncode == 2 and "OPTLINE_SECRET_KEY" in result.stderr and "Traceback" not in result.stderr
    )


def test_a_sender_typed_in_a_common_format_still_receives_stop(db_url: str) -> None:
    """Issue 12, item 2: ``--sender "(415) 555-0100"`` is stored as E.164, so replies to +14155550100 land."""
    for name, sender in (("deals", "(415) 555-0100"), ("news", "415.555.0101")):
        made = run(
            db_url,
            "programs",
            "create",
            name,
            "--brand",
            "Acme",
            "--sender",
            sender,
            "--scope",
            "program",
            "--help-contact",
            "help@acme.example",
        )
        assert made.returncode == 0, made.stderr
    listed = run(db_url, "programs", "list").stdout
    assert "+14155550100" in listed and "+14155550101" in listed and "(415)" not in listed
    person = ("--from", "+14155550134")
    for to in ("+14155550100", "+14155550101"):
        joined = run(db_url, "inbound", "simulate", *person, "--to", to, "--body", "START", "--json")
        assert json.loads(joined.stdout)["consent_event_id"], joined.stdout + joined.stderr
    stopped = run(db_url, "inbound", "simulate", *person, "--to", "+14155550100", "--body", "STOP", "--json")
    assert json.loads(stopped.stdout)["intent"] == "optout", stopped.stderr
    shown = run(db_url, "contacts", "show", "+14155550134").stdout
    subscriptions = {
        line.split()[1]: line.split()[3]
        for line in shown.splitlines()
        if line.split()[1:2] in (["deals"], ["news"])
    }
    assert subscriptions == {"deals": "unsubscribed", "news": "subscribed"}


@pytest.mark.parametrize("sender", ["hello", "123"])
def test_a_sender_that_is_not_a_number_is_refused_naming_it(db_url: str, sender: str) -> None:
    result = run(
        db_url,
        "programs",
        "create",
        "deals",
        "--brand",
        "Acme",
        "--sender",
        sender,
        "--help-contact",
        "help@acme.example",
    )
    assert result.returncode == 1 and f"sender '{sender}' is neither a phone number" in result.stderr
    assert "Traceback" not in result.stderr
    assert "deals" not in run(db_url, "programs", "list").stdout


def test_a_cli_import_is_recorded_for_the_dashboard(db_url: str, tmp_path: Path) -> None:
    from optline.bootstrap import build
    from optline.config import Settings
    from optline.services import imports
    from tests.support.cli import CREATE_DEALS

    assert run(db_url, "init").returncode == 0 and run(db_url, *CREATE_DEALS).returncode == 0
    csv = tmp_path / "list.csv"
    csv.write_text("phone,name\n(415) 555-0134,Ann\nnope,Bob\n", encoding="utf-8")
    imported = run(db_url, "contacts", "import", str(csv), "--program", "deals")
    assert imported.returncode == 0, imported.stderr
    link = re.search(r"on the dashboard: /dashboard/imports/(\d+)", imported.stdout)
    assert link, imported.stdout
    c = build(Settings(env="test", database_url=db_url))
    try:
        with c.db.read() as conn:
            record = imports.get(conn, int(link.group(1)))
        assert record is not None
        assert (record["source"], record["file_name"], record["program"], record["status"]) == (
            "cli",
            "list.csv",
            "deals",
            "done",
        )
        assert record["counts"]["rejected"] == 1 and record["imported_by"]
        rows = list(imports.rejects_rows(c.db, record))
    finally:
        c.close()
    assert rows == [["line", "reason", "phone", "name"], [3, rows[1][1], "nope", "Bob"]]
    assert "bad phone number" in rows[1][1]


def test_programs_set_changes_the_link_and_sending_window_and_refuses_an_impossible_one(db_url: str) -> None:
    assert run(db_url, "init").returncode == 0
    made = run(
        db_url,
        "programs",
        "create",
        "deals",
        "--brand",
        "Acme",
        "--help-contact",
        "help@acme.example",
        "--no-optout-link",
    )
    assert made.returncode == 0, made.stderr
    on = run(db_url, "programs", "set", "deals", "--optout-link", "--sending-window", "09:00-20:00")
    assert on.returncode == 0, on.stderr
    assert "opt-out link on" in on.stdout and "sending window 09:00-20:00" in on.stdout
    off = run(db_url, "programs", "set", "deals", "--no-optout-link", "--optout-instruction", "monthly")
    assert (
        "opt-out link off" in off.stdout and "monthly" in off.stdout and "09:00-20:00" in off.stdout
    )  # kept
    bad = run(db_url, "programs", "set", "deals", "--sending-window", "07:00-20:00")
    assert (
        bad.returncode != 0 and "--sending-window: sending window start 07:00 is before 08:00" in bad.stderr
    )
    nothing = run(db_url, "programs", "set", "deals")
    assert nothing.returncode != 0 and "nothing to change" in nothing.stderr
    # A name typed in another encoding (its bytes not UTF-8) is a program that does not exist, named.
    other = run(db_url, "programs", "set", "de\udcffals", "--optout-link")
    assert other.returncode == 1 and "no program named 'de\\udcffals' (programs: deals)" in other.stderr
    for name in ("de/als", "de\udcffals"):
        refused = run(
            db_url, "programs", "create", name, "--brand", "Acme", "--help-contact", "help@acme.example"
        )
        assert refused.returncode == 1 and f"program name {name!r}: no" in refused.stderr, refused.stderr
    assert "Traceback" not in other.stderr + refused.stderr
