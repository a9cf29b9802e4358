"""Regenerate migration 0001 (the whole schema) from the table metadata.

Only while optline is unreleased: once a database in the field has run 0001, schema changes get new
revisions instead. Run with ``make migration``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from optline.adapters.db.database import MIGRATIONS_DIR, alembic_config

INITIAL = MIGRATIONS_DIR / "versions" / "0001_schema.py"


def main() -> None:
    INITIAL.unlink(missing_ok=True)
    versions = MIGRATIONS_DIR / "versions"
    # Later revisions point at 0001; park them while it is regenerated.
    with tempfile.TemporaryDirectory() as tmp:
        parked = [p.rename(Path(tmp) / p.name) for p in versions.glob("0*.py")]
        try:
            cfg = alembic_config(f"sqlite:///{Path(tmp) / 'empty.db'}")
            command.revision(cfg, message="schema", autogenerate=True, rev_id="0001", head="base")
        finally:
            for p in parked:
                p.rename(versions / p.name)
    generated = next((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    generated.rename(INITIAL)
    for args in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
        subprocess.run([sys.executable, "-m", "ruff", *args, str(INITIAL)], check=False)
    print(f"wrote {INITIAL}")


if __name__ == "__main__":
    main()
