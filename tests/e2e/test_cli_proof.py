"""The CLI end to end (both engines): ``ledger checkpoint``, ``ledger verify --checkpoints``, ``ledger export``
checked by tools/verify_export.py run without optline importable, and ``proof`` rendered to PDF and PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from optline.adapters.db.tables import contacts
from optline.bootstrap import Container
from tests.support import tamper
from tests.support.server import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "verify_export.py"
PHONES = ("+14155550134", "+14155550135")


def cli(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``optline`` with a signing key file and a checkpoint log of this test's own, outside the database."""
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "COLUMNS": "200", "OPTLINE_ENV": "development",
           "OPTLINE_LEDGER_SIGNING_KEY_FILE": str(tmp_path / "keys" / "ledger.key"),
           "OPTLINE_LEDGER_CHECKPOINT_LOG": str(tmp_path / "elsewhere" / "checkpoints.jsonl")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "optline", *args], capture_output=True, text=True, env=env, timeout=120
    )


def independent(*args: Path | str) -> subprocess.CompletedProcess[str]:
    """The auditor's check: ``python -I -S`` (no site-packages, no PYTHONPATH), so optline cannot be imported."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def _setup(db_url: str, tmp_path: Path) -> None:
    def ok(*args: str) -> None:
        done = cli(db_url, tmp_path, *args)
        assert done.returncode == 0, done.stderr

    ok(
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
    csv = tmp_path / "list.csv"
    csv.write_text("phone,consented_at,consent_source\n" + "".join(f"{p},2024-01-01,web\n" for p in PHONES))
    ok("contacts", "import", str(csv), "--program", "deals")
    ok(
        "inbound",
        "simulate",
        "--from",
        PHONES[0],
        "--to",
        "+14155550100",
        "--body",
        "Para por favor, ya no más",
    )
    ok("ledger", "checkpoint")


def test_the_standalone_script_verifies_an_export_and_fails_on_a_changed_byte(
    db_url: str, tmp_path: Path
) -> None:
    assert independent("-c", "x").returncode == 2  # usage
    cannot = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import optline"], capture_output=True, cwd="/"
    )
    assert cannot.returncode != 0  # the script really runs without optline
    _setup(db_url, tmp_path)
    export = tmp_path / "ledger.jsonl"
    done = cli(db_url, tmp_path, "ledger", "export", "--format", "jsonl", "--out", str(export))
    assert done.returncode == 0, done.stderr
    log = tmp_path / "elsewhere" / "checkpoints.jsonl"
    checked = independent(export, "--checkpoints", log)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith("OK: 3 events, 2 chains")

    text = export.read_text(encoding="utf-8")
    assert "ya no más" in text  # UTF-8 as hashed, not \\u escapes
    changed = tmp_path / "changed.jsonl"
    changed.write_text(
        text.replace("ya no más", "ya no mas", 1), encoding="utf-8"
    )  # one byte less, one changed
    failed = independent(changed)
    assert failed.returncode == 1 and "content does not match its hash" in failed.stdout

    since = cli(db_url, tmp_path, "ledger", "export", "--since", "2999-01-01", "--format", "jsonl")
    assert since.returncode == 0 and since.stdout.count('"type":"event"') == 0
    bad = cli(db_url, tmp_path, "ledger", "export", "--since", "last tuesday")
    assert bad.returncode == 1 and "--since 'last tuesday'" in bad.stderr and "Traceback" not in bad.stderr


def test_verify_against_the_checkpoint_log_catches_a_rewrite_of_every_hash(
    db_url: str, container: Container, tmp_path: Path
) -> None:
    _setup(db_url, tmp_path)
    log = tmp_path / "elsewhere" / "checkpoints.jsonl"
    assert cli(db_url, tmp_path, "ledger", "verify", "--checkpoints", str(log)).returncode == 0
    with container.db.read() as conn:
        cid = conn.execute(select(contacts.c.id).where(contacts.c.phone == PHONES[0])).scalar_one()
    tamper.rewrite_event(container, cid, 2, message_text="thanks!")  # the opt-out now reads "thanks!"
    assert cli(db_url, tmp_path, "ledger", "verify").returncode == 0  # the database agrees with itself
    caught = cli(db_url, tmp_path, "ledger", "verify", "--checkpoints", str(log))
    assert caught.returncode == 1 and "changed, removed or reordered" in caught.stderr, caught.stderr
    export = tmp_path / "after.jsonl"
    cli(db_url, tmp_path, "ledger", "export", "--out", str(export))
    assert independent(export).returncode == 0  # the export is self-consistent …
    assert independent(export, "--checkpoints", log).returncode == 1  # … but not what was signed
    missing = cli(db_url, tmp_path, "ledger", "verify", "--checkpoints", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "cannot read the checkpoint log" in missing.stderr


def test_the_pdf_proof_renders_on_a4_and_letter(db_url: str, engine_name: str, tmp_path: Path) -> None:
    _setup(db_url, tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    for paper, size in (("A4", "595.28 x 841.89 pts"), ("Letter", "612 x 792 pts")):
        pdf = tmp_path / f"proof-{paper}.pdf"
        done = cli(
            db_url,
            tmp_path,
            "proof",
            "(415) 555-0134",
            "--format",
            "pdf",
            "--paper",
            paper,
            "--out",
            str(pdf),
        )
        assert done.returncode == 0 and "verified" in done.stdout, done.stderr
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
        assert size in info
        prefix = ARTIFACTS / f"proof-{engine_name}-{paper}"
        subprocess.run(
            ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(pdf), str(prefix)], check=True
        )
        png = next(ARTIFACTS.glob(f"{prefix.name}*.png"))
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    text = cli(db_url, tmp_path, "proof", PHONES[0])
    assert "Para por favor, ya no más" in text.stdout and "covered by: checkpoints.jsonl:1" in text.stdout
    html = cli(db_url, tmp_path, "proof", PHONES[0], "--format", "html").stdout
    assert "@page" in html and "Consent evidence for +14155550134" in html
    unknown = cli(db_url, tmp_path, "proof", "+14155550999")
    assert unknown.returncode == 1 and "no contact with the number +14155550999" in unknown.stderr


def test_production_starts_no_worker_that_cannot_sign_checkpoints(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "OPTLINE_ENV": "production",
           "OPTLINE_SECRET_KEY": "Kq3vN8xT2mW7pR4sL9yB6hD1fG5jZ0cE-production-test"}  # fmt: skip
    env.pop("OPTLINE_LEDGER_SIGNING_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "optline", "worker", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "OPTLINE_LEDGER_SIGNING_KEY" in done.stderr, done.stderr
    assert not list(tmp_path.glob("*.key"))
