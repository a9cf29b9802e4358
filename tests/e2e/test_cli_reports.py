"""The CLI as a subprocess: list imports with rejects, the report and the audit in every format."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from optline.adapters.db.tables import dnc_numbers, reassigned_numbers
from optline.bootstrap import Container


def optline(db_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPTLINE_DATABASE_URL": db_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "optline", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_imports_report_and_audit(container: Container, db_url: str, tmp_path: Path) -> None:
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("201,5550123\n+1 415 555 0134\n\n(415) 555-0134\nnot a number\n201,5550123,9\n")
    done = optline(db_url, "dnc", "import", str(dnc), "--source", "national DNC 2026-11", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "added" in done.stdout
    rejects = list(csv.reader((tmp_path / "dnc.rejects.csv").open()))
    assert [r[0] for r in rejects[1:]] == ["5", "6"]
    assert "letters" in rejects[1][1] and "expected one number per line" in rejects[2][1]

    rnd = tmp_path / "rnd.csv"
    rnd.write_text(
        "phone number,disconnect date\n4155550134,2026-05-01\n4155550135,05/02/2026\n"
        "4155550136,someday\n4155550137\n4155550138,2099-01-01\n"
    )
    done = optline(db_url, "reassigned", "import", str(rnd), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rejects = list(csv.reader((tmp_path / "rnd.rejects.csv").open()))
    assert [(r[0], r[1].split(":")[0]) for r in rejects[1:]] == [
        ("4", "bad disconnect date"),
        ("5", "missing disconnect date"),
        ("6", "bad disconnect date"),
    ]
    # Importing again adds nothing.
    again = optline(db_url, "reassigned", "import", str(rnd), cwd=tmp_path)
    assert "already known" in again.stdout
    with container.db.read() as conn:
        assert sorted(conn.execute(select(dnc_numbers.c.phone)).scalars()) == ["+12015550123", "+14155550134"]
        assert len(conn.execute(select(reassigned_numbers)).all()) == 2

    report = optline(db_url, "report", "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["totals"]["optouts"] == 0
    table = optline(db_url, "report", cwd=tmp_path)
    assert table.returncode == 0 and "Opt-outs, all programs" in table.stdout
    bad = optline(db_url, "report", "--program", "nope", cwd=tmp_path)
    assert bad.returncode == 1 and "no program named 'nope'" in bad.stderr
    audit = optline(db_url, "audit", "--format", "csv", cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.splitlines()[0].startswith("reason,contact_id,phone")
