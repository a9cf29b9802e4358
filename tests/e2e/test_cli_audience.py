"""``optline campaigns`` audience filters as a user runs them (a subprocess), on both engines."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, update

from optline.adapters.db.tables import campaigns
from tests.e2e.test_cli import run
from tests.support.cli import CREATE_DEALS


def test_unknown_filter_key_fails_naming_the_known_keys(db_url: str, tmp_path: Path) -> None:
    assert run(db_url, *CREATE_DEALS).returncode == 0
    csv = tmp_path / "list.csv"
    csv.write_text(
        "phone,first_name,color,consented_at,consent_source\n"
        "+14155550134,Ann,red,2024-01-01,web\n+14155550135,Bob,,2024-01-01,web\n",
        encoding="utf-8",
    )
    assert run(db_url, "contacts", "import", str(csv), "--program", "deals").returncode == 0

    typo = run(db_url, "campaigns", "create", "reds", "-p", "deals", "-t", "Hi", "--filter", "colour=red")
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert "'colour'" in typo.stderr and "color" in typo.stderr and "us_state" in typo.stderr

    assert (
        run(
            db_url, "campaigns", "create", "reds", "-p", "deals", "-t", "Hi", "--filter", "color=red"
        ).returncode
        == 0
    )
    preview = run(db_url, "campaigns", "audience", "reds", "-p", "deals")
    assert preview.returncode == 0, preview.stderr
    assert "recipients" in preview.stdout

    engine = create_engine(db_url)  # a stored filter whose key no contact has any more
    with engine.begin() as conn:
        conn.execute(update(campaigns).values(audience_filter={"colour": "red"}))
    engine.dispose()
    for args in (
        ("campaigns", "audience", "reds", "-p", "deals"),
        ("campaigns", "send", "reds", "-p", "deals", "--no-wait"),
    ):
        refused = run(db_url, *args)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "'colour'" in refused.stderr and "color" in refused.stderr
