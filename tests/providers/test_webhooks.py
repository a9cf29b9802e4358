"""Every provider's webhook module against its fixture files, signed with the provider's own SDK."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from optline.adapters.providers.plivo import webhook as plivo
from optline.adapters.providers.simulator import webhook as simulator
from optline.adapters.providers.telnyx import webhook as telnyx
from optline.adapters.providers.twilio import webhook as twilio
from optline.adapters.providers.vonage import webhook as vonage
from optline.adapters.providers.webhook_request import SignatureError, WebhookRequest
from tests.support import signing

BASE = "https://sms.example.com"
FIXTURES = Path(__file__).parent / "fixtures"
MODULES: dict[str, ModuleType] = {"twilio": twilio, "vonage": vonage, "plivo": plivo, "telnyx": telnyx,
                                  "simulator": simulator}  # fmt: skip
CASES = [(p, fx) for p in MODULES for fx in json.loads((FIXTURES / f"{p}.json").read_text())]


def verify(provider: str, req: WebhookRequest, *, mode: str = "md5hash", now: float | None = None) -> None:
    at = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    {
        "twilio": lambda: twilio.verify(req, signing.TWILIO_TOKEN),
        "vonage": lambda: vonage.verify(req, signing.VONAGE_SECRET, mode, at),
        "plivo": lambda: plivo.verify(req, signing.PLIVO_TOKEN),
        "telnyx": lambda: telnyx.verify(req, signing.TELNYX_PUBLIC, at),
        "simulator": lambda: simulator.verify(req, signing.SECRET_KEY),
    }[provider]()


def request(provider: str, fx: dict, **kw: float) -> WebhookRequest:
    s = signing.sign(provider, fx, BASE, **kw)
    query = [tuple(p.split("=", 1)) for p in s.url.partition("?")[2].split("&") if p]
    from urllib.parse import unquote_plus

    pairs = [(unquote_plus(k), unquote_plus(v)) for k, v in query]
    return WebhookRequest(method=s.method, url=s.url, headers=s.headers, body=s.body, query=pairs)


@pytest.mark.parametrize(("provider", "fx"), CASES, ids=[f"{p}:{fx['name']}" for p, fx in CASES])
def test_signed_fixture_verifies_and_parses(provider: str, fx: dict) -> None:
    req = request(provider, fx)
    verify(provider, req, mode=fx.get("mode", "md5hash"))
    parsed = getattr(MODULES[provider], f"parse_{fx['kind']}")(req)
    assert {k: getattr(parsed, k) for k in fx["expect"]} == fx["expect"]


def tampered(provider: str, req: WebhookRequest) -> list[WebhookRequest]:
    """The same request with its content changed, with its signature removed, and (where the URL is signed)
    sent to another URL."""
    if req.body:
        changed = replace(req, body=req.body + (b" " if req.is_json else b"&Body2=x"))
    else:
        changed = replace(
            req, query=[(k, v + "!") if k in ("text", "status") else (k, v) for k, v in req.query]
        )
    unsigned = replace(
        req,
        headers={k: v for k, v in req.headers.items() if k == "content-type"},
        query=[(k, v) for k, v in req.query if k != "sig"],
        body=b"&".join(p for p in req.body.split(b"&") if not p.startswith(b"sig="))
        if not req.is_json
        else req.body,
    )
    variants = [changed, unsigned]
    if provider in ("twilio", "plivo"):
        variants.append(replace(req, url=req.url.replace("sms.example.com", "evil.example.com")))
    return variants


@pytest.mark.parametrize(("provider", "fx"), CASES, ids=[f"{p}:{fx['name']}" for p, fx in CASES])
def test_tampered_or_unsigned_is_refused(provider: str, fx: dict) -> None:
    for bad in tampered(provider, request(provider, fx)):
        with pytest.raises(SignatureError):
            verify(provider, bad, mode=fx.get("mode", "md5hash"))


@pytest.mark.parametrize("provider", ["telnyx", "vonage"])
def test_replayed_timestamp_is_refused(provider: str) -> None:
    fx = next(f for p, f in CASES if p == provider)
    old = time.time() - 301
    req = request(provider, fx, now=old)
    verify(provider, req, mode=fx.get("mode", "md5hash"), now=old + 10)  # fresh: accepted
    with pytest.raises(SignatureError, match="5 minutes"):
        verify(provider, req, mode=fx.get("mode", "md5hash"))


def test_twilio_sdk_accepts_what_we_accept_and_port_variants() -> None:
    fx = next(f for p, f in CASES if p == "twilio")
    req = request("twilio", fx)
    twilio.verify(
        replace(req, url=req.url.replace("sms.example.com", "sms.example.com:443")), signing.TWILIO_TOKEN
    )


def test_twilio_opt_out_type_is_exposed() -> None:
    fx = next(f for p, f in CASES if p == "twilio")
    assert twilio.provider_opt_out(twilio.parse_inbound(request("twilio", fx))) == "STOP"


def test_missing_secret_refuses_everything() -> None:
    fx = next(f for p, f in CASES if p == "twilio")
    with pytest.raises(SignatureError, match="not set"):
        twilio.verify(request("twilio", fx), "")


def test_simulator_query_string_is_not_read() -> None:
    """The simulator signs its JSON body only: a query parameter added to a captured request is ignored."""
    body, headers = simulator.encode({"sid": "s-1", "status": "delivered"}, signing.SECRET_KEY)
    req = WebhookRequest(
        method="POST",
        url="http://testserver/webhooks/simulator/status?error_code=opted_out",
        headers=headers,
        body=body,
        query=[("error_code", "opted_out")],
    )
    simulator.verify(req, signing.SECRET_KEY)
    update = simulator.parse_status(req)
    assert update.error_code is None and not update.opted_out
