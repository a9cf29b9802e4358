"""A request body over the limit is refused with 413 before it is read (entrypoints/body_limit.py): a 200 MB
POST to a webhook or the API costs what one chunk costs. The app is driven in-process through httpx's ASGI
transport, which hands the app the body chunk by chunk as the app asks for it — so the test counts how much
of the 200 MB the app ever pulled. Then once through a real server, with a socket that declares 200 MB and
sends almost nothing. No database is involved beyond the app's start: SQLite only."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from optline.bootstrap import Container
from optline.config import Settings
from optline.entrypoints.api.app import create_app
from tests.support import signing, web

pytestmark = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)

CHUNK = 64 * 1024
HUGE = 200 * 1024 * 1024
LIMIT = 1024 * 1024


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, public_url="http://testserver", **signing.SETTINGS)


class Stream:
    """A 200 MB body produced chunk by chunk, counting what was taken."""

    def __init__(self, total: int = HUGE) -> None:
        self.total, self.sent = total, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += CHUNK
            yield b"A" * CHUNK


async def _post(container: Container, path: str, stream: Stream, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(path, content=stream, headers=headers)


PATHS = ["/webhooks/twilio/sms", "/webhooks/telnyx/sms", "/v1/contacts", "/join/deals"]


@pytest.mark.parametrize("path", PATHS)
def test_a_declared_oversize_body_is_refused_unread(container: Container, path: str) -> None:
    assert container.settings.max_body_bytes == LIMIT  # the default
    stream = Stream()
    headers = {"content-length": str(HUGE), "content-type": "application/x-www-form-urlencoded"}
    response = asyncio.run(_post(container, path, stream, headers))
    assert response.status_code == 413 and "limit is 1048576 bytes" in response.text
    assert stream.sent <= CHUNK  # nothing read (httpx may have produced the first chunk)


@pytest.mark.parametrize("path", PATHS)
def test_a_streamed_oversize_body_without_length_is_cut_at_the_limit(container: Container, path: str) -> None:
    web.program(container)  # /join/deals exists: the form is read
    stream = Stream()
    headers = {"content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked"}
    response = asyncio.run(_post(container, path, stream, headers))
    assert response.status_code == 413, response.text
    assert "too large" in response.text.lower()
    assert stream.sent <= LIMIT + CHUNK  # read up to the limit, not one chunk further


def test_a_body_under_the_limit_reaches_the_route(container: Container) -> None:
    """Just under the limit, unsigned: the webhook's own answer (403), not the limit's."""
    stream = Stream(LIMIT - CHUNK)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = asyncio.run(_post(container, "/webhooks/twilio/sms", stream, headers))
    assert response.status_code == 403


def test_the_limit_is_a_setting(db_url: str) -> None:
    from optline.bootstrap import build

    small = Settings(env="test", database_url=db_url, max_body_bytes=4096, **signing.SETTINGS)
    c = build(small)
    try:
        response = asyncio.run(_post(c, "/v1/contacts", Stream(8192), {"content-type": "application/json"}))
    finally:
        c.close()
    assert response.status_code == 413


def test_a_real_server_answers_413_to_a_200_mb_declaration_at_once(serve_app: tuple[str, int]) -> None:
    """Through uvicorn: the client declares 200 MB, sends 10 bytes, and gets its 413 without sending more."""
    host, port = serve_app
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/twilio/sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            + f"\r\nContent-Length: {HUGE}\r\n\r\n".encode()
            + b"Body=STOP&"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.fixture
def serve_app(container: Container) -> AsyncIterator[tuple[str, int]]:  # type: ignore[misc]
    import threading

    import uvicorn

    # uvicorn serves on this socket, bound here: a port chosen and released could be taken meanwhile.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(container), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        thread.join(0.05)
    yield ("127.0.0.1", port)
    server.should_exit = True
    thread.join(10)
    sock.close()
