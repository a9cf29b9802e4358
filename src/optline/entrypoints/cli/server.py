"""``optline init`` and ``optline serve``."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import typer

from optline.bootstrap import Container
from optline.entrypoints.cli.common import console, container, fail

if TYPE_CHECKING:
    from fastapi import FastAPI

app = typer.Typer()
# How many processes ``serve --workers`` runs, for each of them (they are started with its environment).
PROCESSES_ENV = "_OPTLINE_SERVE_PROCESSES"


@app.command()
def init() -> None:
    """Create or migrate the database named by OPTLINE_DATABASE_URL (./optline.db by default)."""
    c = container(create=True)
    console.print(f"[green]database ready[/green]: {c.db.engine.url.render_as_string(hide_password=True)}")


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default OPTLINE_HOST, 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default OPTLINE_PORT, 8000)"),
    workers: int = typer.Option(
        1, "--workers", min=1, help="processes answering requests on one port (PostgreSQL only when > 1)"
    ),
) -> None:
    """Migrate the database and serve the API, webhooks and pages (with the SMS simulator by default)."""
    from optline.logs import configure

    c = container(create=True)
    configure(c.settings.effective_log_format)
    host = host or c.settings.host
    port = port or c.settings.port
    if workers > 1 and c.settings.is_sqlite:
        # SQLite takes one writer at a time and its dispatch worker runs inside serve: one process is the
        # design (DESIGN.md); several processes share a PostgreSQL database.
        fail(
            "--workers > 1 needs PostgreSQL (OPTLINE_DATABASE_URL=postgresql+psycopg://…); SQLite serves "
            "from one process"
        )
    # Before anything is created or printed: a first start on a taken port used to create the admin, print
    # its one-time password and then fail, so the password was lost with the process.
    _require_free_port(host, port)
    base = f"http://{host}:{port}"
    public, warning = c.settings.public_url_when_serving(host, port)
    if public != c.settings.public_url:
        c.settings.public_url = public
        os.environ["OPTLINE_PUBLIC_URL"] = public  # what the --workers processes build their settings from
    console.print(f"[bold]optline[/bold] on {base}  (provider: {c.settings.provider})")
    console.print(f"  public URL {public}  (opt-out links, sign-up form, webhook signatures)")
    if warning:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    console.print(f"  API docs   {base}/docs")
    console.print(f"  health     {base}/healthz")
    _first_run_admin(c, base)
    if workers > 1:
        _serve_processes(c, host, port, workers)
        return
    import uvicorn

    from optline.domain import phones
    from optline.entrypoints.api.app import create_app

    app_ = create_app(c)
    phones.preload()  # before the first request: see there
    worker: tuple[threading.Thread, threading.Event] | None = None
    if c.settings.is_sqlite:  # SQLite: one in-process dispatch worker (PostgreSQL: run `optline worker`)
        from optline.entrypoints.worker import require_checkpoint_configuration, start_thread

        require_checkpoint_configuration(c)
        worker = start_thread(c)
        console.print("  worker     in-process (SQLite)")
    # log_config=None: uvicorn's loggers write through the handler configured above (JSON or text);
    # optline.access (logs.write_access_line) writes the access lines, with the request id. proxy_headers stays
    # uvicorn's default (X-Forwarded-For from 127.0.0.1): the sign-up evidence and the rate limits read the
    # client's address through a local proxy, and the check costs ~1 µs a request.
    server = uvicorn.Server(
        uvicorn.Config(app_, host=host, port=port, log_level="info", access_log=False, log_config=None)
    )

    signalled: list[int] = []

    def shut_down(sig: int, _frame: object) -> None:
        signalled.append(sig)
        server.should_exit = True  # a signal before uvicorn's own handlers are in place: it does not start
        if worker is not None:
            worker[1].set()

    # While it runs, uvicorn's handlers take SIGTERM/SIGINT: it stops accepting, finishes the requests in
    # flight, then re-raises the signal to the handler that was there before it — this one, which does not
    # end the process, so the worker's batch is recorded below and the exit code is 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, shut_down)
    server.run()
    if worker is not None:
        thread, stop = worker
        stop.set()
        thread.join()  # the batch in hand is handed over and recorded (worker.run closes its dispatcher)
    c.close()
    if not server.started and not signalled:  # it could not listen (as uvicorn.run reports it)
        raise typer.Exit(3)


def _serve_processes(c: Container, host: str, port: int, workers: int) -> None:
    """``workers`` uvicorn processes on one socket (uvicorn's supervisor: it binds once, restarts a process
    that dies, and on SIGTERM/SIGINT stops each one the graceful way — requests in flight are answered).

    Each process builds its own container from the same environment (``process_app``); the database was
    migrated above. Counters live in each process, so /metrics adds them up through prometheus-client's
    multiprocess mode: PROMETHEUS_MULTIPROC_DIR as given, or a fresh directory for this run."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="optline-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir  # inherited by the processes started below
    c.close()  # the processes open their own connections; none is shared across a fork
    os.environ[PROCESSES_ENV] = str(workers)
    config = uvicorn.Config(
        "optline.entrypoints.cli.server:process_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        log_config=None,
    )
    console.print(f"  processes  {workers} (PostgreSQL: run `optline worker` to send)")
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def process_app() -> FastAPI:
    """The application of one ``serve --workers`` process (uvicorn imports it by name in a new process)."""
    from optline.adapters.db.group_commit import GroupCommit
    from optline.bootstrap import build
    from optline.domain import phones
    from optline.entrypoints.api.app import create_app
    from optline.logs import configure

    c = build()
    configure(c.settings.effective_log_format)
    app_ = create_app(c)
    # The webhooks' writer threads are shared out between the processes (group_commit.writer_threads).
    app_.state.group_commit = GroupCommit(c.db, processes=int(os.environ.get(PROCESSES_ENV, "1")))
    phones.preload()  # in each process: see there
    app_.router.add_event_handler("shutdown", c.close)
    return app_


def _require_free_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is already in use (another optline serve?) — use --port")
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")


def _first_run_admin(c: Container, base: str) -> None:
    """First start with no users: create ``admin`` and print its one-time password (shown once)."""
    from optline.services import users

    with c.db.transaction() as conn:
        created = users.create_first_admin(conn, c.clock)
    if created is None:
        console.print(f"  dashboard  {base}/dashboard")
        return
    name, password = created
    console.print(f"  dashboard  {base}/dashboard")
    console.print(
        f"[bold yellow]first run:[/bold yellow] created user [bold]{name}[/bold] with one-time password "
        f"[bold]{password}[/bold] (you choose your own at first sign-in)"
    )


@app.command()
def worker(
    once: bool = typer.Option(False, help="stop when nothing is due instead of waiting for more"),
) -> None:
    """Send queued messages (run as many as the provider allows on PostgreSQL; one on SQLite)."""
    # Imported here: the dispatch path (providers, aiohttp, httpx) is ~1 s of imports no other command needs.
    from optline.entrypoints.worker import require_checkpoint_configuration, run
    from optline.logs import configure

    stop = threading.Event()
    # SIGTERM (a service manager, `docker stop`) or Ctrl-C: the batch in hand is handed over and recorded
    # (run() ends its loop, then Dispatcher.close), then the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    c = _container_once_reachable(stop)
    if c is None:  # stopped while waiting for the database
        return
    require_checkpoint_configuration(c)
    configure(c.settings.effective_log_format)
    console.print(f"[bold]optline worker[/bold] (provider: {c.settings.provider})")
    total = run(c, stop, once=once)
    console.print(
        f"sent {total.sent}, suppressed {total.suppressed}, deferred {total.deferred}, "
        f"skipped {total.skipped}, retried {total.retried}, failed {total.failed}"
    )
    c.close()


# A worker started while PostgreSQL is restarting (everything started at once, a failover) waits for it, as a
# running worker rides out an outage (entrypoints/worker.py Failures), for up to this long; after that the
# error is the database's, as for any other command (a wrong host or password is reported after the wait).
WAIT_FOR_DATABASE_SECONDS = 60.0


def _container_once_reachable(stop: threading.Event) -> Container | None:
    """``container()``, retried with backoff while PostgreSQL refuses connections (None: stopped meanwhile)."""
    from sqlalchemy.exc import OperationalError

    from optline.adapters.db.database import sqlite_path
    from optline.config import get_settings
    from optline.entrypoints.cli.common import err_console

    deadline = time.monotonic() + WAIT_FOR_DATABASE_SECONDS
    delay = 0.2
    while True:
        try:
            return container()
        except OperationalError as exc:
            # SQLite: a file that cannot be opened is not an outage that ends by itself.
            if sqlite_path(get_settings().database_url) is not None or time.monotonic() + delay > deadline:
                raise
            reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
            err_console.print(
                f"[yellow]waiting for the database:[/yellow] {reason}; retrying in {delay:.1f}s"
            )
        if stop.wait(delay):
            return None
        delay = min(delay * 2, 5.0)
