"""What an ``optline`` process loads: a command imports what it uses, not the web stack, the dispatch path or
the phone geocoder (each ~0.2-0.5 s of CPU per start, paid by every CLI command before lazy imports). The
modules loaded are checked, not the time taken, so the test does not depend on how busy the machine is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Loaded only by the commands that need them: serving, sending, classifying, state lookups, PDF, metrics,
# migrating.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "optline.entrypoints.web",
    "optline.entrypoints.api",
    "aiohttp",
    "httpx",
    "optline.services.dispatch",
    "optline.domain.classify",
    "phonenumbers.geocoder",
    "fpdf",
    "prometheus_client",
    "alembic",  # a database already at the newest revision is not migrated (adapters/db/database.py)
)

# Runs the command in this process (as ``python -m optline`` does), then reports what it loaded.
PROBE = """
import json, sys
from optline.entrypoints.cli import main

heavy = json.loads(sys.argv[1])
sys.argv = ["optline", *sys.argv[2:]]
try:
    main()
except SystemExit:
    pass
from optline.services import users

report = {
    "loaded": sorted(m for m in heavy if m in sys.modules),
    "dummy_hash_made": users.dummy_hash.cache_info().currsize > 0,
}
print("PROBE " + json.dumps(report), file=sys.stderr)
"""


def _probe(db_url: str, *args: str, cwd: Path) -> dict[str, object]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_ENV": "development", "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("PROBE ")]
    assert lines, done.stderr
    report: dict[str, object] = json.loads(lines[-1].removeprefix("PROBE "))
    return report


def test_help_loads_no_command(tmp_path: Path) -> None:
    report = _probe(f"sqlite:///{tmp_path / 'none.db'}", "--help", cwd=tmp_path)
    assert report == {"loaded": [], "dummy_hash_made": False}


@pytest.mark.parametrize(
    "args",
    [("init",), ("programs", "list"), ("ledger", "verify"), ("campaigns", "list"), ("report",)],
    ids=" ".join,
)
def test_a_command_loads_what_it_uses(db_url: str, tmp_path: Path, args: tuple[str, ...]) -> None:
    report = _probe(db_url, *args, cwd=tmp_path)
    assert report == {"loaded": [], "dummy_hash_made": False}


def test_the_classifier_is_loaded_by_classify(tmp_path: Path) -> None:
    # The other side of the laziness: the command that needs a module still gets it.
    (tmp_path / "replies.txt").write_text("STOP\n")
    report = _probe(f"sqlite:///{tmp_path / 'none.db'}", "classify", "replies.txt", cwd=tmp_path)
    assert report["loaded"] == ["optline.domain.classify"]


WEB_APP = """
import sys
from optline.bootstrap import build
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from optline.services import users

assert users.dummy_hash.cache_info().currsize == 0, "made at import"
create_app(build(Settings(env="test", database_url=sys.argv[1])))
print(users.dummy_hash.cache_info().currsize)
"""


def test_the_web_app_makes_the_dummy_hash_before_its_first_sign_in(db_url: str) -> None:
    """Made on first use, not at import; the web app uses it at once, so that the first sign-in with an
    unknown name does not take longer than one with a known name (which would tell the name is unknown)."""
    done = subprocess.run(
        [sys.executable, "-c", WEB_APP, db_url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
