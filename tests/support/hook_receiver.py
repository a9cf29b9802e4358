"""A real HTTP receiver for outbound event webhooks: its port is bound before it listens (so it can be down
first: connection refused), answering 500 or 200 as the test says, recording every request.

The port stays bound from the start, listening or not: a port chosen and then released could be taken by
another process (a test on another xdist worker, any outgoing connection) before the receiver starts."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


def _bound_socket() -> socket.socket:
    # Bound but not listening: a connection to it is refused, as to a receiver that is down.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Receiver:
    _socket: socket.socket = field(default_factory=_bound_socket)
    answer: int = 200
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/optline"

    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.answered < 300]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                code = receiver.answer
                receiver.received.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body, code)
                )
                payload = b"ok" if code < 300 else b"receiver is failing on purpose"
                self.send_response(code)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self._server.socket.close()
        self._server.socket = self._socket
        self._server.server_activate()  # listen() on the socket bound since the receiver was made
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._socket.close()
