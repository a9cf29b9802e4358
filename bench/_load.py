"""The load generator of ``bench.inbound``, in a process of its own so that it does not share an interpreter
with the server it measures: ``connections`` keep-alive connections (aiohttp), each sending Twilio-signed
STOPs from distinct numbers back to back for ``seconds``.

Signatures come from the twilio SDK's RequestValidator over the exact URL and form the server then parses.
It prints one JSON line: counts by status, requests/s, p50/p99 latency, and the numbers answered 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlencode

import aiohttp
from tests.support.outbound import phone
from twilio.request_validator import RequestValidator

SENDER = "+14155550100"
ACCOUNT = "AC" + "0" * 32


def signed(validator: RequestValidator, url: str, i: int, run: str) -> tuple[str, bytes, dict[str, str]]:
    params = {"MessageSid": f"SM{run[:8]:0>8}{i:024d}", "AccountSid": ACCOUNT, "From": phone(i), "To": SENDER,
              "Body": "STOP", "NumMedia": "0", "NumSegments": "1"}  # fmt: skip
    headers = {
        "X-Twilio-Signature": validator.compute_signature(url, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return params["From"], urlencode(params).encode(), headers


async def run(
    url: str, token: str, start: int, seconds: float, connections: int, tag: str, rate: float = 0
) -> dict:
    validator = RequestValidator(token)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ok: list[str] = []
    errors: list[str] = []
    counter = iter(range(start, start + 10_000_000))
    sequence = iter(range(10_000_000))
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                sender, body, headers = signed(validator, url, next(counter), tag)
                began = time.perf_counter()
                if rate:  # open loop: request n is due at n / rate, and its latency counts from then, so a
                    due = opened + next(sequence) / rate  # server that falls behind shows it in p99
                    if due >= deadline:
                        return
                    await asyncio.sleep(max(0.0, due - began))
                    began = due
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    ok.append(sender)

        opened = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - opened
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "statuses": statuses, "errors": len(errors),
            "ok_phones": ok}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--start", type=int, default=0, help="index of the first phone number")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0, help="requests/s in all (0: as fast as answered)")
    parser.add_argument("--tag", default="0", help="8 hex digits that tell runs' MessageSids apart")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.url, args.token, args.start, args.seconds, args.connections, args.tag, args.rate)
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
