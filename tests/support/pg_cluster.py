"""A private PostgreSQL cluster that a test may stop and restart without disturbing anything else.

The database-outage suite restarts PostgreSQL under running optline processes. Restarting the shared server
on 127.0.0.1:5432 would break every other test (and other people's work on the machine), so the suite starts
its own cluster from the installed server binaries (``initdb`` + ``pg_ctl``, as the ``postgres`` user when
run as root) on a free port in a temporary directory. Under ``CI=true`` a cluster that cannot be started
fails the run; elsewhere the suite skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import in_ci
from tests.support.server import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def _bin_dir() -> Path | None:
    if not PG_ROOT.is_dir():
        return None
    versions = sorted((p for p in PG_ROOT.iterdir() if (p / "bin" / "pg_ctl").exists()), key=lambda p: p.name)
    return versions[-1] / "bin" if versions else None


@dataclass
class Cluster:
    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None  # the OS user that owns the cluster (postgres when the tests run as root)

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", opts, "-l", str(self.data_dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: every open connection is cut and in-flight transactions roll back."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)


def _start_on_a_free_port(cluster: Cluster) -> None:
    # The port was free when chosen; another process (a test on another xdist worker, an outgoing
    # connection) may have bound it since. The server then logs so and does not start: choose another.
    for attempt in range(5):
        try:
            cluster.start()
            return
        except RuntimeError:
            log = cluster.data_dir / "log"
            taken = log.exists() and "already in use" in log.read_text(errors="replace")
            if not taken or attempt == 4:
                raise
            log.unlink()
            cluster.port = free_port()


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    user = "postgres" if os.geteuid() == 0 else None
    problem = None
    if bin_dir is None:
        problem = f"no PostgreSQL server binaries under {PG_ROOT}"
    elif user and shutil.which("runuser") is None:
        problem = "runuser is missing (needed to run initdb as postgres)"
    if problem:
        if in_ci():
            pytest.fail(f"{problem} (CI=true: the database-outage suite is mandatory)", pytrace=False)
        pytest.skip(problem)
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="optline-pg-"))
    data = root / "data"
    data.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(data, user)
    cluster = Cluster(bin_dir=bin_dir, data_dir=data, port=free_port(), user=user)
    cluster._run(
        "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", timeout=120
    )
    _start_on_a_free_port(cluster)
    try:
        yield cluster
    finally:
        with suppress(RuntimeError):  # already stopped by the test
            cluster._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
