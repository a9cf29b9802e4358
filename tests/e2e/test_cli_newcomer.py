"""What a newcomer tripped over (issue 19), driven as they drove it: the ``optline`` command as a subprocess.

Each mistake gets one clear line and a non-zero exit, never a traceback; nothing is created by a command that
only reads; the outputs say what happened in words.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select, text

from optline.adapters.clock import as_utc
from optline.adapters.db.tables import campaigns
from optline.config import Settings
from tests.support import outbound
from tests.support.cli import CREATE_DEALS


def run(
    db_url: str, *args: str, stdin: str | None = None, columns: int = 200, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "COLUMNS": str(columns), "OPTLINE_ENV": "development",
           **env_extra}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "optline", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


def one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def sql(db_url: str, statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(Settings(database_url=db_url).database_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("foo://user:s3cret@host/db", ("unsupported database 'foo'", "postgresql+psycopg://")),
        ("sqlite:/x.db", ("not a database URL", "sqlite:///")),
        ("mysql://root@localhost/optline", ("unsupported database 'mysql'",)),
    ],
)
def test_a_wrong_database_url_is_one_line_naming_what_to_write(url: str, needles: tuple[str, ...]) -> None:
    result = run(url, "campaigns", "list")
    one_clear_line(result, *needles)
    assert "s3cret" not in result.stderr + result.stdout  # a password in a bad URL is never echoed


def test_postgres_spelling_from_other_tools_is_accepted() -> None:
    url = Settings(database_url="postgres://root@127.0.0.1:5432/test").database_url
    assert url == "postgresql+psycopg://root@127.0.0.1:5432/test"


def test_init_in_a_folder_that_does_not_exist_names_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = run(f"sqlite:///{missing}/optline.db", "init")
    one_clear_line(result, str(missing), "does not exist")


def test_commands_other_than_init_and_serve_never_create_a_database(tmp_path: Path) -> None:
    db = tmp_path / "optline.db"
    url = f"sqlite:///{db}"
    for args in (
        ("campaigns", "status", "spring", "-p", "deals"),
        ("programs", "list"),
        ("worker", "--once"),
    ):
        one_clear_line(run(url, *args), f"no database at {db}", "optline init")
        assert not db.exists()
    assert run(url, "init").returncode == 0 and db.exists()
    assert run(url, "programs", "list").returncode == 0


def test_a_database_without_the_schema_asks_for_init(db_url: str) -> None:
    sql(db_url, "DROP TABLE alembic_version")
    one_clear_line(run(db_url, "programs", "list"), "no optline schema", "optline init")


@pytest.fixture
def deals(db_url: str, tmp_path: Path) -> str:
    """A program with three subscribers, one of them without a first name."""
    assert run(db_url, *CREATE_DEALS).returncode == 0
    csv = tmp_path / "list.csv"
    csv.write_text(
        "phone,first_name,consented_at,consent_source\n"
        "+14155550134,Ann,2025-01-01,web\n+14155550135,Bob,2025-01-01,web\n+14155550136,,2025-01-01,web\n",
        encoding="utf-8",
    )
    imported = run(db_url, "contacts", "import", str(csv), "--program", "deals")
    assert imported.returncode == 0, imported.stderr
    # Tests on the real clock must not depend on the time of day: everyone lives where it is daytime now.
    sql(db_url, "UPDATE contacts SET time_zone = :zone", zone=outbound.zone_where(allowed=True))
    return db_url


def test_schedule_takes_words_in_the_operators_zone_and_explains_bad_ones(deals: str) -> None:
    assert (
        run(deals, "campaigns", "create", "spring", "-p", "deals", "-t", "Hi, 2 for 1 at Acme").returncode
        == 0
    )
    bad = run(deals, "campaigns", "schedule", "spring", "-p", "deals", "--at", "next week")
    one_clear_line(bad, "--at", "unrecognised time 'next week'", "tomorrow 10:00", "ISO 8601")
    past = run(deals, "campaigns", "schedule", "spring", "-p", "deals", "--at", "2020-01-01T00:00:00Z")
    one_clear_line(past, "has passed")

    ok = run(
        deals,
        "campaigns",
        "schedule",
        "spring",
        "-p",
        "deals",
        "--at",
        "tomorrow 10:00",
        "--tz",
        "America/New_York",
    )
    assert ok.returncode == 0, ok.stderr
    zone = ZoneInfo("America/New_York")
    tomorrow = datetime.now(zone).date() + timedelta(days=1)
    expected = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, 0, tzinfo=zone).astimezone(UTC)
    assert f"{expected:%Y-%m-%d %H:%M} UTC" in ok.stdout and "10:00 E" in ok.stdout  # both zones shown
    assert "3 messages" in ok.stdout and "worker" in ok.stdout
    engine = create_engine(Settings(database_url=deals).database_url)
    with engine.connect() as conn:
        scheduled = conn.execute(
            select(campaigns.c.scheduled_at).where(campaigns.c.name == "spring")
        ).scalar_one()
    engine.dispose()
    assert as_utc(scheduled) == expected


def test_lint_and_audience_count_recipients_missing_a_field_and_a_default_silences_it(deals: str) -> None:
    create = run(
        deals, "campaigns", "create", "hello", "-p", "deals", "-t", "Hi {{ first_name }}, 2 for 1 at Acme"
    )
    assert create.returncode == 0, create.stderr
    lint = run(deals, "campaigns", "lint", "hello", "-p", "deals")
    assert "1 of 3 recipients has no first_name" in " ".join(lint.stdout.split())
    assert 'default("there")' in lint.stdout
    audience = run(deals, "campaigns", "audience", "hello", "-p", "deals")
    assert "1 of 3 recipients has no first_name" in " ".join(audience.stdout.split())

    template = 'Hi {{ first_name | default("there") }}, 2 for 1 at Acme'
    assert run(deals, "campaigns", "create", "kind", "-p", "deals", "-t", template).returncode == 0
    kind = run(deals, "campaigns", "lint", "kind", "-p", "deals")
    assert kind.returncode == 0 and "first_name" not in kind.stdout
    sent = run(deals, "campaigns", "send", "kind", "-p", "deals")
    assert sent.returncode == 0, sent.stderr
    bodies = sorted(r[0] for r in sql(deals, "SELECT body FROM simulator_messages WHERE direction = 'out'"))
    there = [
        b for b in bodies if b.startswith("Hi there, 2 for 1 at Acme. Reply STOP to opt out or tap http")
    ]
    assert len(bodies) == 3 and len(there) == 1, bodies
    assert sql(deals, "SELECT count(*) FROM messages WHERE status = 'failed'")[0][0] == 0


def test_a_campaign_with_no_recipients_says_so_and_is_done(deals: str) -> None:
    assert (
        run(
            deals,
            "campaigns",
            "create",
            "nobody",
            "-p",
            "deals",
            "-t",
            "Hi at Acme",
            "--filter",
            "us_state=ZZ",
        ).returncode
        == 0
    )
    sent = run(deals, "campaigns", "send", "nobody", "-p", "deals")
    assert sent.returncode == 0, sent.stderr
    assert "no recipients" in sent.stdout and "campaigns audience" in sent.stdout
    status = run(deals, "campaigns", "status", "nobody", "-p", "deals", "--json")
    assert json.loads(status.stdout)["status"] == "done"


def test_send_says_until_when_messages_are_deferred_and_who_sends_them(deals: str) -> None:
    sql(
        deals,
        """UPDATE programs SET settings = '{"frequency_cap": {"max": 1, "days": 7, "action": "defer"}}'""",
    )
    for name in ("one", "two"):
        assert (
            run(
                deals, "campaigns", "create", name, "-p", "deals", "-t", f"{name}: 2 for 1 at Acme"
            ).returncode
            == 0
        )
    first = run(deals, "campaigns", "send", "one", "-p", "deals")
    assert first.returncode == 0 and "queued 3 messages" in first.stdout, first.stdout + first.stderr
    second = run(deals, "campaigns", "send", "two", "-p", "deals", "--no-dispatch", "--no-wait")
    assert "worker must be running" in " ".join(second.stdout.split())
    third = run(deals, "campaigns", "send", "two", "-p", "deals")
    flat = " ".join(third.stdout.split())
    assert "3 messages deferred" in flat and "until" in flat and "UTC" in flat and "optline worker" in flat, (
        flat
    )


def test_serve_on_a_taken_port_fails_before_creating_the_admin_and_reset_password_exists(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'optline.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(url, "serve", "--port", str(port))
    one_clear_line(result, f"port {port}", "already in use", "--port")
    assert "one-time password" not in result.stdout
    assert sql(url, "SELECT count(*) FROM users")[0][0] == 0  # the next start still creates and prints it

    one_clear_line(run(url, "users", "reset-password", "admin"), "no user named 'admin'")
    assert run(url, "users", "create", "ops", "--password", "a-long-password").returncode == 0
    reset = run(url, "users", "reset-password", "ops")
    assert reset.returncode == 0, reset.stderr
    new_password = reset.stdout.strip().splitlines()[-1]
    from optline.adapters.clock import SystemClock
    from optline.bootstrap import build
    from optline.services import users

    c = build(Settings(env="test", database_url=url), clock=SystemClock())
    with c.db.transaction() as conn:
        assert users.authenticate(conn, c.clock, "ops", "a-long-password") is None
        user = users.authenticate(conn, c.clock, "ops", new_password)
        assert user is not None and user["must_change_password"]
    c.close()


def test_classify_dash_reads_standard_input() -> None:
    out = run("sqlite:///unused.db", "classify", "-", stdin="STOP\nthanks!\n")
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["intent"] for line in out.stdout.splitlines()] == ["optout", "other"]


def test_inbound_simulate_validates_numbers_and_prints_a_readable_outcome(deals: str) -> None:
    one_clear_line(
        run(deals, "inbound", "simulate", "--from", "abc", "--to", "+14155550100", "--body", "STOP"),
        "--from",
        "'abc'",
    )
    one_clear_line(
        run(deals, "inbound", "simulate", "--from", "+14155550134", "--to", "123", "--body", "STOP"),
        "--to",
        "'123'",
    )
    out = run(
        deals, "inbound", "simulate", "--from", "(415) 555-0134", "--to", "+14155550100", "--body", "STOP"
    )
    assert out.returncode == 0, out.stderr
    assert "+14155550134 → +14155550100: read as optout" in out.stdout
    assert "consent changed: ledger event #" in out.stdout and "reply queued: " in out.stdout
    assert "{" not in out.stdout  # no raw JSON unless asked
    again = run(
        deals,
        "inbound",
        "simulate",
        "--from",
        "+14155550134",
        "--to",
        "+14155550100",
        "--body",
        "thanks",
        "--json",
    )
    assert json.loads(again.stdout)["intent"] == "other"


def test_signups_list_keeps_whole_numbers_at_80_columns(db_url: str) -> None:
    assert (
        run(
            db_url,
            "programs",
            "create",
            "--help-contact",
            "help@acme.example",
            "deals",
            "--brand",
            "Acme",
            "--sender",
            "+14155550100",
            "--join-keyword",
            "JOIN",
            "--double-opt-in",
        ).returncode
        == 0
    )
    run(db_url, "inbound", "simulate", "--from", "+14155550134", "--to", "+14155550100", "--body", "JOIN")
    listed = run(db_url, "signups", "list", columns=80)
    assert listed.returncode == 0, listed.stderr
    assert "+14155550134" in listed.stdout


def test_contacts_show_reads_as_a_person_reads_it_and_json_for_machines(deals: str) -> None:
    stop = run(
        deals, "inbound", "simulate", "--from", "+14155550134", "--to", "+14155550100", "--body", "STOP"
    )
    assert stop.returncode == 0, stop.stderr
    shown = run(deals, "contacts", "show", "(415) 555-0134", columns=250)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "first_name=Ann" in out and "{'" not in out  # no Python dict
    assert "deals" in out and "program 1" not in out  # program names, not ids
    assert "opt in via import" in out and "opt out via sms keyword" in out
    assert "← reply read as optout" in out and "→ confirmation message" in out  # messages in and out
    times = re.findall(r"\d{4}-\d{2}-\d{2}[ T][\d:.+]+(?: UTC)?", out)
    assert times and all(t.endswith(" UTC") for t in times), times  # one time format, with its zone
    data = json.loads(run(deals, "contacts", "show", "+14155550134", "--format", "json").stdout)
    assert data["contact"]["phone"] == "+14155550134"
    assert [s["status"] for s in data["subscriptions"]] == ["unsubscribed"]
    kinds = [t["kind"] for t in data["timeline"]]
    assert kinds.index("consent") < kinds.index("in") < kinds.index("out")
    assert all(t["at"].endswith("+00:00") for t in data["timeline"])


def test_a_program_needs_a_support_contact_and_help_names_it(db_url: str) -> None:
    missing = run(db_url, "programs", "create", "news", "--brand", "Acme", "--sender", "+14155550101")
    one_clear_line(missing, "--help-contact", "support contact", "website", "email", "phone")
    useless = run(db_url, "programs", "create", "news", "--brand", "Acme", "--help-contact", "contact us")
    one_clear_line(useless, "--help-contact", "'contact us'")
    made = run(
        db_url,
        "programs",
        "create",
        "news",
        "--brand",
        "Acme",
        "--sender",
        "+14155550101",
        "--help-contact",
        "(800) 555-0199",
    )
    assert made.returncode == 0, made.stderr
    helped = run(
        db_url, "inbound", "simulate", "--from", "+14155550134", "--to", "+14155550101", "--body", "HELP"
    )
    assert "Acme: help at +18005550199." in helped.stdout and "reply HELP" not in helped.stdout, helped.stdout


def test_serve_on_another_port_builds_links_for_that_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optline.db'}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OPTLINE_DATABASE_URL": url, "COLUMNS": "200", "OPTLINE_ENV": "development"}
    env.pop("OPTLINE_PUBLIC_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "optline", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "public URL" in line:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    assert f"public URL http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
    assert "warning" not in "".join(lines)
