"""A real ``optline serve`` subprocess on a free port, and a Chromium launched the way DEVELOPERS.md says."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    database_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def first_run_password(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.output):
                m = re.search(r"one-time password (\S+)", line)
                if m:
                    return m.group(1)
            time.sleep(0.05)
        raise AssertionError("optline serve printed no one-time password:\n" + "".join(self.output))


class PortTaken(Exception):
    """The chosen port was taken between choosing it and binding it."""


@contextmanager
def serve(database_url: str, *args: str, **env: str) -> Iterator[Server]:
    """``optline serve`` with ``args`` (e.g. ``--workers``, ``2``) and ``env`` on top of the test settings."""
    # A free port is only free when it is chosen: another process (a test on another xdist worker, any
    # outgoing connection) may bind it before serve does. serve then says so and exits; choose another.
    for attempt in range(5):
        server = _start(database_url, free_port(), args, env)
        try:
            _wait_ready(server)
        except PortTaken:
            _stop(server.process)
            if attempt == 4:
                raise AssertionError(
                    "optline serve found its port taken 5 times:\n" + "".join(server.output)
                ) from None
            continue
        except BaseException:
            _stop(server.process)
            raise
        break
    try:
        yield server
    finally:
        _stop(server.process)


def _start(database_url: str, port: int, args: tuple[str, ...], env: dict[str, str]) -> Server:
    url = f"http://127.0.0.1:{port}"
    environ = {
        **os.environ, "OPTLINE_DATABASE_URL": database_url, "OPTLINE_PUBLIC_URL": url, "OPTLINE_ENV": "test",
        "COLUMNS": "250", "NO_COLOR": "1", **env,
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "optline", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(url=url, database_url=database_url, process=process)
    server.reader = threading.Thread(target=_pump, args=(process, server.output), daemon=True)
    server.reader.start()
    return server


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pump(process: subprocess.Popen[str], sink: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.append(line)


def _wait_ready(server: Server, timeout: float = 300) -> None:
    # A hang guard, not a figure: serve --workers 2 imports the app three times, and with the other test
    # workers (or anything else) on the CPU that took more than a minute (load average 15–39).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            if server.reader is not None:
                server.reader.join(10)  # everything it printed before exiting
            output = "".join(server.output)
            if "already in use" in output:  # optline's own check, or uvicorn's bind (EADDRINUSE)
                raise PortTaken(output)
            raise AssertionError("optline serve exited:\n" + output)
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("optline serve did not become ready:\n" + "".join(server.output))


class PageWatch:
    """Collects console errors, page errors and failed requests; ``check`` fails the test on any."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )

    def _failed(self, request: Any) -> None:
        # A navigation cancels what the previous page was still loading (net::ERR_ABORTED): not a failure.
        if "ERR_ABORTED" not in str(request.failure):
            self.problems.append(f"request failed: {request.url} {request.failure}")

    def check(self, where: str) -> None:
        problems, self.problems[:] = list(self.problems), []
        assert not problems, f"{where}: " + "; ".join(problems)

    def clear(self) -> None:
        self.problems.clear()


def launch(playwright: Any) -> Any:
    from playwright.sync_api import expect

    # expect() retries its assertion for 5 s by default: a hang guard, not a figure under test, and short
    # when the other test workers share the CPU. Actions keep Playwright's 30 s.
    expect.set_options(timeout=60_000)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP = {"viewport": {"width": 1366, "height": 900}}


A11Y_SCRIPT = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push('html has no lang');
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} h1 elements`);
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || el.hidden) continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name}`);
  }
  for (const b of document.querySelectorAll('button, a')) {
    if (!(b.innerText || '').trim() && !b.getAttribute('aria-label')) problems.push(`empty ${b.tagName.toLowerCase()}`);
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push(`img without alt: ${img.src}`);
  }
  return problems;
}"""


def accessibility_problems(page: Any) -> list[str]:
    """A few checks a screen-reader or keyboard user would notice first (not a full audit)."""
    return list(page.evaluate(A11Y_SCRIPT))
