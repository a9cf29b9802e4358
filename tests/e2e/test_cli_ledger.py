"""``optline ledger verify`` on a CLI-only installation (no worker ever ran), on both engines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from optline.adapters.db.tables import contacts, ledger_digests
from optline.bootstrap import Container
from tests.e2e.test_cli import run
from tests.support import tamper
from tests.support.cli import CREATE_DEALS

PHONES = ("+14155550134", "+14155550135", "+14155550136")


def test_cli_commands_record_digests_and_verify_names_every_broken_chain(
    db_url: str, container: Container, tmp_path: Path
) -> None:
    assert run(db_url, *CREATE_DEALS).returncode == 0
    csv = tmp_path / "list.csv"
    csv.write_text("phone,consented_at,consent_source\n" + "".join(f"{p},2024-01-01,web\n" for p in PHONES))
    assert run(db_url, "contacts", "import", str(csv), "--program", "deals").returncode == 0
    for phone in PHONES[:2]:
        stop = run(db_url, "inbound", "simulate", "--from", phone, "--to", "+14155550100", "--body", "STOP")
        assert stop.returncode == 0, stop.stderr
    with container.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_digests)).scalar_one() >= 1
        ids = dict(conn.execute(select(contacts.c.phone, contacts.c.id)).all())
    assert run(db_url, "ledger", "verify").returncode == 0

    # Both opt-outs hidden, projection included: the chains and the projection agree with each other,
    # and only the digests the CLI commands recorded remember the heads that were there.
    for phone in PHONES[:2]:
        tamper.hide_newest_event(container, ids[phone])
    verified = run(db_url, "ledger", "verify")
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    output = verified.stdout + verified.stderr
    assert PHONES[0] in output and PHONES[1] in output and PHONES[2] not in output
