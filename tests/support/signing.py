"""Sign webhook requests the way each provider does, with the providers' own SDKs (twilio, plivo, vonage,
PyNaCl for Telnyx's Ed25519), so the tests check optline against the real algorithms, not a copy of ours."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from nacl.signing import SigningKey

TWILIO_TOKEN = "twilio-test-auth-token-0123456789abcd"
VONAGE_SECRET = "vonage-test-signature-secret-0123"
PLIVO_TOKEN = "plivo-test-auth-token-0123456789abcdef"
TELNYX_KEY = SigningKey(hashlib.sha256(b"optline telnyx test key").digest())
TELNYX_PUBLIC = base64.b64encode(bytes(TELNYX_KEY.verify_key)).decode()
SECRET_KEY = "test-secret-key-for-the-simulator-0123456789"

SETTINGS = {
    "twilio_auth_token": TWILIO_TOKEN, "vonage_signature_secret": VONAGE_SECRET, "plivo_auth_token": PLIVO_TOKEN,
    "telnyx_public_key": TELNYX_PUBLIC, "secret_key": SECRET_KEY,
}  # fmt: skip


@dataclass
class Signed:
    method: str
    path: str  # path + query string
    headers: dict[str, str]
    body: bytes
    url: str  # the public URL that was signed


def sign(provider: str, fixture: dict[str, Any], base_url: str, *, now: float | None = None) -> Signed:
    now = time.time() if now is None else now
    path = fixture["path"] + (f"?{fixture['query']}" if fixture.get("query") else "")
    return {
        "twilio": _twilio,
        "vonage": _vonage,
        "plivo": _plivo,
        "telnyx": _telnyx,
        "simulator": _simulator,
    }[provider](fixture, base_url.rstrip("/"), path, now)


def _twilio(fx: dict[str, Any], base: str, path: str, now: float) -> Signed:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TWILIO_TOKEN)
    if fx.get("json"):
        body = json.dumps(fx["params"]).encode()
        url = f"{base}{path}?bodySHA256={hashlib.sha256(body).hexdigest()}"
        sig = validator.compute_signature(url, {})
        assert validator.validate(url, body.decode(), sig)
        return Signed(
            "POST",
            url[len(base) :],
            {"content-type": "application/json", "x-twilio-signature": sig},
            body,
            url,
        )
    url = base + path
    sig = validator.compute_signature(url, fx["params"])
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": sig}
    return Signed("POST", path, headers, urlencode(fx["params"]).encode(), url)


def _vonage(fx: dict[str, Any], base: str, path: str, now: float) -> Signed:
    params = {**fx["params"], "timestamp": str(int(now)), "nonce": "6ee1b5b0-8e1f-4d9a-9c3f"}
    mode = fx.get("mode", "md5hash")
    if mode == "md5hash":
        # The legacy "MD5 hash" mode is not in the v4 SDK; this is the algorithm its predecessor (nexmo)
        # implemented: md5 of the sorted "&name=value" string followed by the secret.
        data = "".join(
            f"&{k}={str(v).replace('&', '_').replace('=', '_')}" for k, v in sorted(params.items())
        )
        params["sig"] = hashlib.md5((data + VONAGE_SECRET).encode()).hexdigest()
    else:
        from vonage_http_client.auth import Auth

        auth = Auth(api_key="abcd1234", signature_secret=VONAGE_SECRET, signature_method=mode)
        params["sig"] = auth.sign_params(dict(params))
        assert Auth(
            api_key="abcd1234", signature_secret=VONAGE_SECRET, signature_method=mode
        ).check_signature(dict(params))
    if fx.get("method", "GET") == "GET":
        query = urlencode(params)
        return Signed("GET", f"{path}?{query}", {}, b"", f"{base}{path}?{query}")
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return Signed("POST", path, headers, urlencode(params).encode(), base + path)


def _plivo(fx: dict[str, Any], base: str, path: str, now: float) -> Signed:
    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3, validate_v3_signature

    url, nonce = base + path, f"nonce{int(now)}"
    signed = get_signature_v3(
        PLIVO_TOKEN.encode(), construct_post_url(url, dict(fx["params"])), nonce.encode()
    )
    sig = signed.decode()
    assert validate_v3_signature("POST", url, nonce, PLIVO_TOKEN, sig, dict(fx["params"]))
    headers = {
        "content-type": "application/x-www-form-urlencoded", "x-plivo-signature-v3": sig,
        "x-plivo-signature-v3-nonce": nonce,
    }  # fmt: skip
    return Signed("POST", path, headers, urlencode(fx["params"]).encode(), url)


def _telnyx(fx: dict[str, Any], base: str, path: str, now: float) -> Signed:
    body = json.dumps(fx["payload"]).encode()
    stamp = str(int(now))
    sig = base64.b64encode(TELNYX_KEY.sign(stamp.encode() + b"|" + body).signature).decode()
    headers = {"content-type": "application/json", "telnyx-signature-ed25519": sig, "telnyx-timestamp": stamp}
    return Signed("POST", path, headers, body, base + path)


def _simulator(fx: dict[str, Any], base: str, path: str, now: float) -> Signed:
    from optline.adapters.providers.simulator import webhook

    body, headers = webhook.encode(fx["payload"], SECRET_KEY)
    return Signed("POST", path, headers, body, base + path)


def inbound_fixture(provider: str, *, sid: str, from_: str, to: str, body: str) -> dict[str, Any]:
    """A minimal inbound message in the provider's own shape (integration and e2e tests)."""
    if provider == "twilio":
        params = {"MessageSid": sid, "SmsSid": sid, "From": from_, "To": to, "Body": body, "NumMedia": "0"}
        return {"path": "/webhooks/twilio/sms", "params": params}
    if provider == "vonage":
        params = {
            "msisdn": from_.lstrip("+"),
            "to": to.lstrip("+"),
            "messageId": sid,
            "text": body,
            "type": "text",
        }
        return {"path": "/webhooks/vonage/sms", "params": params, "method": "POST", "mode": "md5hash"}
    if provider == "plivo":
        params = {
            "From": from_.lstrip("+"),
            "To": to.lstrip("+"),
            "Text": body,
            "Type": "sms",
            "MessageUUID": sid,
        }
        return {"path": "/webhooks/plivo/sms", "params": params}
    if provider == "telnyx":
        payload = {
            "data": {
                "event_type": "message.received",
                "id": f"ev-{sid}",
                "payload": {
                    "id": sid,
                    "text": body,
                    "from": {"phone_number": from_},
                    "to": [{"phone_number": to}],
                },
            }
        }
        return {"path": "/webhooks/telnyx/sms", "payload": payload}
    return {"path": "/webhooks/simulator/sms", "payload": {"sid": sid, "from": from_, "to": to, "body": body}}


def status_fixture(provider: str, *, sid: str, status: str, error_code: str | None = None) -> dict[str, Any]:
    if provider == "twilio":
        params = {
            "MessageSid": sid,
            "MessageStatus": status,
            **({"ErrorCode": error_code} if error_code else {}),
        }
        return {"path": "/webhooks/twilio/status", "params": params}
    if provider == "telnyx":
        errors = [{"code": error_code, "title": "blocked"}] if error_code else []
        payload = {
            "data": {
                "event_type": "message.finalized",
                "id": f"ev-{sid}",
                "payload": {"id": sid, "errors": errors, "to": [{"phone_number": "+1", "status": status}]},
            }
        }
        return {"path": "/webhooks/telnyx/status", "payload": payload}
    raise ValueError(provider)
