"""``optline users`` and ``optline demo`` as a user runs them (a subprocess), on both engines."""

from __future__ import annotations

from tests.e2e.test_cli import run


def test_users_and_demo(db_url: str) -> None:
    created = run(db_url, "users", "create", "maria", "--password", "a-long-password")
    assert created.returncode == 0, created.stderr
    generated = run(db_url, "users", "create", "ops", "--generate")
    assert generated.returncode == 0 and len(generated.stdout.strip().splitlines()[-1]) == 23
    dup = run(db_url, "users", "create", "maria", "--password", "a-long-password")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = run(db_url, "users", "create", "kim", "--password", "short")
    assert short.returncode == 1 and "at least 10" in short.stderr
    listed = run(db_url, "users", "list")
    assert "maria" in listed.stdout and "ops" in listed.stdout

    loaded = run(db_url, "demo", "--contacts", "50")
    assert loaded.returncode == 0, loaded.stderr
    assert "demo loaded" in loaded.stdout and "50 contacts" in loaded.stdout
    again = run(db_url, "demo")
    assert again.returncode == 1 and "already exists" in again.stderr
    verified = run(db_url, "ledger", "verify")  # the demo's consent went through the ledger properly
    assert verified.returncode == 0, verified.stderr
