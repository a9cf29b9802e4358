"""An import killed (SIGKILL) at the worst instants leaves whole chunks, a prefix of the file, on both engines;
importing the same file again finishes it with every row accounted for and every chain verifying.

On PostgreSQL two chunks are merged at once (adapters/db/ordered_commits.py): the kills land while one chunk
is committing and the next has written everything and waits for its turn, or right after a commit."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from optline.adapters.db import ledger
from optline.adapters.db.tables import consent_events, contacts, subscriptions
from optline.bootstrap import build
from optline.config import Settings
from optline.domain.phones import parse_phone
from optline.services.contacts_import import import_file
from optline.services.programs import create_program

ROWS, CHUNK = 250, 50  # five chunks: lines 2–51, 52–101, 102–151, 152–201, 202–251

# The import in a process of its own, killed by itself at the instant named on its command line:
#   "written <start>": the chunk starting at that line has done all its writes (not committed);
#   "counted <n>": this process has just taken the n-th committed chunk into its summary.
CHILD = r"""
import os, signal, sys
from pathlib import Path
from optline.adapters.db import programs
from optline.bootstrap import build
from optline.config import Settings
from optline.services import contacts_import as importer

url, path, program_id, when, at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
importer.MERGE_LINES = int(sys.argv[6])
c = build(Settings(env="test", database_url=url))
with c.db.read() as conn:
    program = programs.get(conn, program_id)
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if when == "written":
    real_chunk = importer._merge_chunk
    def chunk(conn, clock, program, start, *args):
        real_chunk(conn, clock, program, start, *args)
        if start == at:
            die()
    importer._merge_chunk = chunk
else:
    real_add, counted = importer.ImportSummary.add, [0]
    def add(self, merged):
        real_add(self, merged)
        counted[0] += 1
        if counted[0] == at:
            die()
    importer.ImportSummary.add = add
importer.import_file(c.db, c.clock, path, program)
print("finished without being killed")
"""


def _phone(i: int) -> str:
    return f"+1 415 201 {i:04d}"


@pytest.mark.parametrize(
    ("when", "at", "at_least"),
    [
        ("written", 102, 1),  # the third chunk written; the second committing or committed
        ("written", 52, 0),  # the second chunk written; the first committing or committed
        ("written", 202, 3),  # the last chunk written
        ("counted", 2, 2),  # right after the second chunk's commit; the third may be waiting or committed
    ],
)
def test_killed_import_leaves_whole_chunks_and_finishes_when_run_again(
    db_url: str, tmp_path: Path, when: str, at: int, at_least: int
) -> None:
    path = tmp_path / "contacts.csv"
    rows = "".join(f"{_phone(i)},P{i},2024-01-01,web\n" for i in range(ROWS))
    path.write_text("phone,first_name,consented_at,consent_source\n" + rows, encoding="utf-8")
    c = build(Settings(env="test", database_url=db_url))
    try:
        with c.db.transaction() as conn:
            program = create_program(
                conn, c.clock, help_contact="https://acme.example/help", name="deals", brand="Acme"
            )
        root = Path(__file__).resolve().parents[2]
        child = subprocess.run(
            [sys.executable, "-c", CHILD, db_url, str(path), str(program["id"]), when, str(at), str(CHUNK)],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr

        with c.db.read() as conn:
            stored = {r.phone for r in conn.execute(select(contacts.c.phone))}
            events = conn.execute(select(func.count()).select_from(consent_events)).scalar_one()
            projected = conn.execute(select(func.count()).select_from(subscriptions)).scalar_one()
            assert ledger.verify(conn).ok
        # Whole chunks, and a prefix of the file: the first n chunks' rows, each with its event and projection.
        chunks, rest = divmod(len(stored), CHUNK)
        assert rest == 0 and at_least <= chunks < ROWS // CHUNK, (len(stored), chunks)
        assert stored == {parse_phone(_phone(i)).e164 for i in range(chunks * CHUNK)}
        assert events == projected == len(stored)

        again = import_file(c.db, c.clock, path, program)
        assert again.rows == ROWS and again.rejected == 0
        assert (again.created, again.unchanged) == (ROWS - len(stored), len(stored))
        assert (again.consent_recorded, again.already_subscribed) == (ROWS - len(stored), len(stored))
        with c.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == ROWS
            assert conn.execute(select(func.count()).select_from(consent_events)).scalar_one() == ROWS
            assert conn.execute(select(func.count()).select_from(subscriptions)).scalar_one() == ROWS
            assert ledger.verify(conn).ok
    finally:
        c.close()
