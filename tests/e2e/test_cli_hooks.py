"""``optline hooks`` as a subprocess on both engines: register (secret printed once), list, see deliveries,
replay, disable; mistakes are one clear line and a non-zero exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from optline.bootstrap import build
from optline.config import Settings
from optline.domain.consent import Action, Channel
from optline.services import consent
from tests.support import web


def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPTLINE_DATABASE_URL": db_url,
        "COLUMNS": "250",
        "NO_COLOR": "1",
        "OPTLINE_ENV": "test",
    }
    return subprocess.run(
        [sys.executable, "-m", "optline", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_hooks_commands(db_url: str) -> None:
    added = run(db_url, "hooks", "add", "https://crm.example.com/optline", "-e", "opt_out", "-e", "opt_in")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert (
        secret.startswith("whsec_")
        and "endpoint 1: https://crm.example.com/optline (opt_out, opt_in)" in added.stdout
    )
    listed = run(db_url, "hooks", "list")
    assert "https://crm.example.com/optline" in listed.stdout and secret not in listed.stdout

    refused = run(db_url, "hooks", "add", "http://crm.example.com/x", "-e", "opt_out")
    assert (
        refused.returncode == 1 and "uses plain http" in refused.stderr and "Traceback" not in refused.stderr
    )
    unknown = run(db_url, "hooks", "add", "https://crm.example.com/x", "-e", "optout")
    assert unknown.returncode == 1 and "unknown event type(s) optout" in unknown.stderr

    container = build(Settings(env="test", database_url=db_url))
    try:
        program = web.program(container)
        person = web.subscriber(container, program)  # an opt-in: one delivery
        with container.db.transaction() as conn:
            consent.record(
                conn,
                container.clock,
                contact_id=person["id"],
                program=program,
                action=Action.OPT_OUT,
                channel=Channel.API,
                evidence={"source": "test"},
            )
    finally:
        container.close()
    deliveries = run(db_url, "hooks", "deliveries")
    assert deliveries.returncode == 0 and "opt_in" in deliveries.stdout and "opt_out" in deliveries.stdout
    assert run(db_url, "hooks", "replay", "1").returncode == 0
    missing = run(db_url, "hooks", "replay", "99")
    assert missing.returncode == 1 and "no webhook delivery 99" in missing.stderr
    assert run(db_url, "hooks", "disable", "1").returncode == 0
    (row,) = [line for line in run(db_url, "hooks", "list").stdout.splitlines() if "crm.example.com" in line]
    assert re.search(r"│\s*no\s*│", row), row  # enabled: no
    assert run(db_url, "hooks", "enable", "1").returncode == 0
    (row,) = [line for line in run(db_url, "hooks", "list").stdout.splitlines() if "crm.example.com" in line]
    assert re.search(r"│\s*yes\s*│", row), row
    enabled_twice = run(db_url, "hooks", "enable", "1")
    assert enabled_twice.returncode == 1 and "no disabled webhook endpoint 1" in enabled_twice.stderr
    for args in (
        ("enable", str(2**63)),
        ("disable", "0"),
        ("replay", str(2**63)),
        ("deliveries", "--endpoint", "-1"),
    ):
        refused = run(db_url, "hooks", *args)  # an id no database holds: a usage error, not a traceback
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, (args, refused.stderr)
