"""``optline --version``."""

from __future__ import annotations

from typer.testing import CliRunner

import optline
from optline.entrypoints.cli import app


def test_version_prints_and_exits() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"optline {optline.__version__}"
