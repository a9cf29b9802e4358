"""A small fake of Twilio's Messages API for the dispatch benchmark, on aiohttp (cheap per request, so the
fake is not the bottleneck at hundreds of requests in flight).

Speaks what https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource documents:
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth (AccountSid:AuthToken) and a
form body (To, From or MessagingServiceSid, Body, StatusCallback); ``201`` with the Message resource as
JSON (``sid`` "SM" + 32 hex, ``status`` "queued"); errors as ``{"code", "message", "more_info", "status"}``
— 20003 for bad credentials, 21211 for a missing To, and 20429 "Too Many Requests" with HTTP 429 and
``Retry-After`` (https://www.twilio.com/docs/api/errors/20429) when a sender goes over ``--cap``. Listing
(``GET …/Messages.json?To=&From=``, the reconciliation path) returns ``messages`` and ``next_page_uri``.

Not Twilio: ``--latency`` seconds before each answer, ``--cap`` accepted messages per sender in any sliding
second (0: none), and ``GET /_log`` (every accepted message: to, from, body, when the request arrived and when it was answered) / ``POST /_reset`` for
the benchmark's checks.

    python -m bench.fake_twilio --port 0 --latency 0.15 --cap 50     # prints "listening <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import time
import uuid
from typing import Any

from aiohttp import web

SID = "AC" + "0" * 32
TOKEN = "bench-token"


def _error(status: int, code: int, message: str, **headers: str) -> web.Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


class Fake:
    def __init__(self, latency: float, cap: int) -> None:
        self.latency, self.cap = latency, cap
        self.log: list[dict[str, Any]] = []
        self.throttled = 0
        self.windows: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        self.auth = f"Basic {expected}"

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.auth or request.match_info["sid"] != SID:
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        to, sender, body = str(form.get("To", "")), str(form.get("From", "")), str(form.get("Body", ""))
        if not to:
            return _error(400, 21211, "Invalid 'To' Phone Number")
        arrived = time.time()
        if self.cap:  # accepted per sender in the last second, counted as requests arrive (the API's door)
            window = self.windows[sender]
            while window and window[0] <= arrived - 1.0:
                window.popleft()
            if len(window) >= self.cap:
                self.throttled += 1
                return _error(429, 20429, "Too Many Requests", **{"Retry-After": "1"})
            window.append(arrived)
        if self.latency:
            await asyncio.sleep(self.latency)
        now = time.time()
        sid = "SM" + uuid.uuid4().hex
        self.log.append({"sid": sid, "to": to, "from": sender, "body": body, "arrived": arrived, "at": now})
        return web.json_response(
            {
                "sid": sid,
                "account_sid": SID,
                "to": to,
                "from": sender,
                "body": body,
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
            },
            status=201,
        )

    async def list(self, request: web.Request) -> web.Response:
        to, sender = request.query.get("To"), request.query.get("From")
        found = [m for m in self.log if (not to or m["to"] == to) and (not sender or m["from"] == sender)]
        return web.json_response(
            {
                "messages": [
                    {"sid": m["sid"], "to": m["to"], "from": m["from"], "body": m["body"], "status": "sent"}
                    for m in found[:50]
                ],
                "next_page_uri": None,
            }
        )

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response({"accepted": self.log, "throttled": self.throttled})

    async def reset(self, request: web.Request) -> web.Response:
        self.log, self.throttled = [], 0
        self.windows.clear()
        if "latency" in request.query:
            self.latency = float(request.query["latency"])
        if "cap" in request.query:
            self.cap = int(request.query["cap"])
        return web.json_response({})


def app(latency: float, cap: int) -> web.Application:
    fake = Fake(latency, cap)
    application = web.Application()
    path = "/2010-04-01/Accounts/{sid}/Messages.json"
    application.add_routes([web.post(path, fake.create), web.get(path, fake.list),
                            web.get("/_log", fake.get_log), web.post("/_reset", fake.reset)])  # fmt: skip
    return application


async def _main(port: int, latency: float, cap: int) -> None:
    runner = web.AppRunner(app(latency, cap), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[attr-defined]
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument(
        "--cap", type=int, default=0, help="accepted messages per sender per second (0: none)"
    )
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.latency, args.cap))
