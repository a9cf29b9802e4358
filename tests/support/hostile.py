"""Hostile webhook requests for the fuzz suites (tests/reliability/): hypothesis strategies that start from a
provider's real message shape and break it — fields dropped, repeated or replaced by NUL characters, control
characters, lone surrogates, over-long ids, huge numbers, nested JSON, wrong types — with bodies that are not
UTF-8, not JSON or declared with the wrong Content-Type; and signing of any such body with the providers' own
SDKs (the Twilio and Plivo SDKs, Vonage's algorithm as in signing.py, Ed25519 for Telnyx), so a request reaches
the parser exactly as a provider (or someone holding its credentials) could send it."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from tests.support import signing

PERSON, SENDER = "+14155550134", "+14155550100"
BASE = "http://testserver"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
FORM_PROVIDERS = ("twilio", "vonage", "plivo")
JSON_PROVIDERS = ("telnyx", "simulator")
PROVIDERS = (*FORM_PROVIDERS, *JSON_PROVIDERS)
WRONG_TYPES = (
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/xml",
    "",
    "application/json; x=1",
)

# Values a careless or hostile sender puts where an id, a number or a text belongs.
_HOSTILE = st.one_of(
    st.text(max_size=40),  # any Unicode (control characters, NUL, RTL marks, emoji…)
    st.text(alphabet="\x00\x01\x1f\x7f\u2028\ufeff\ufffdSTOP ", max_size=12),
    st.integers(101, 3000).map(lambda n: "S" * n),  # longer than any id column
    st.integers(-(10**400), 10**400).map(str),  # huge numbers
    st.sampled_from(
        [
            "STOP\x00",
            "\x00",
            "STOP\x00please",
            "+1415555\x000134",
            '{"a":{"b":[1,{"c":null}]}}',
            "[[[[[[[[]]]]]]]]",
            "null",
            "true",
            "1e999",
            "NaN",
            "-0",
            "%00",
            "\r\nX-Injected: 1",
        ]
    ),
)
# JSON-only values: lone surrogates (legal escapes in JSON text, not encodable as UTF-8), wrong types, nesting.
_JSON_LEAF = st.one_of(
    _HOSTILE,
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False),
    st.sampled_from(["\ud800", "STOP\udfff", "\udbff\udc00"]),
)
_JSON_VALUE = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def inbound(provider: str, sid: str, body: str = "STOP") -> dict[str, Any]:
    return signing.inbound_fixture(provider, sid=sid, from_=PERSON, to=SENDER, body=body)


def status(provider: str, sid: str) -> dict[str, Any]:
    """A status callback in the provider's shape (an opt-out receipt, the most consequential kind)."""
    if provider == "twilio":
        params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "21610", "To": PERSON,
                  "From": SENDER}  # fmt: skip
        return {"path": "/webhooks/twilio/status", "params": params}
    if provider == "vonage":
        params = {"messageId": sid, "status": "failed", "err-code": "9", "msisdn": PERSON.lstrip("+"),
                  "to": SENDER.lstrip("+")}  # fmt: skip
        return {"path": "/webhooks/vonage/status", "params": params, "method": "POST", "mode": "md5hash"}
    if provider == "plivo":
        params = {"MessageUUID": sid, "Status": "failed", "ErrorCode": "200", "To": PERSON.lstrip("+"),
                  "From": SENDER.lstrip("+")}  # fmt: skip
        return {"path": "/webhooks/plivo/status", "params": params}
    if provider == "telnyx":
        return signing.status_fixture("telnyx", sid=sid, status="delivery_failed", error_code="40300")
    return {
        "path": "/webhooks/simulator/status",
        "payload": {"sid": sid, "status": "failed", "error_code": "opted_out"},
    }


@dataclass
class Hostile:
    """One request: the path (with query), Content-Type, body, and whether to sign it."""

    provider: str
    path: str
    content_type: str
    body: bytes
    pairs: list[tuple[str, str]] | None = None  # the form fields the body encodes (None: not a form)
    method: str = "POST"
    signed: bool = True
    note: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def well_formed(self) -> bool:
        """Declared as the provider sends it, and readable as such (what makes an unsigned one a plain 403)."""
        allowed = {"plivo": (FORM,), "telnyx": (JSON,), "simulator": (JSON,)}.get(self.provider, (FORM, JSON))
        if self.method == "GET":
            return not self.body
        if self.content_type.split(";")[0].strip().lower() not in allowed:
            return False
        try:
            text = self.body.decode("utf-8")
            if self.content_type.startswith(JSON):
                return isinstance(json.loads(text), dict)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return False
        return True


def _mutated_pairs(draw: st.DrawFn, params: dict[str, str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        action = draw(st.sampled_from(["keep", "keep", "drop", "replace", "repeat"]))
        if action == "keep":
            pairs.append((name, value))
        elif action == "replace":
            pairs.append((name, draw(_HOSTILE)))
        elif action == "repeat":
            pairs += [(name, value), (name, draw(_HOSTILE))]
    extra = draw(st.lists(st.tuples(st.text(min_size=1, max_size=10), _HOSTILE), max_size=2))
    return pairs + extra


def _mutated_json(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
            if action == "keep":
                out[k] = _mutated_json(draw, v, depth + 1)
            elif action == "replace":
                out[k] = draw(_JSON_VALUE)
        return out
    if isinstance(value, list):
        return [_mutated_json(draw, v, depth + 1) for v in value]
    return value


@st.composite
def requests(draw: st.DrawFn, provider: str, kind: str, *, signed: bool) -> Hostile:
    sid = draw(st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))
    fx = inbound(provider, f"SM{sid}") if kind == "sms" else status(provider, f"SM{sid}")
    if kind == "sms":  # what a person texts: every opt-out word, or hostile text
        text = draw(st.sampled_from(["STOP", "stop\x00", "UNSUBSCRIBE", "START", "HELP", "hi"]) | _HOSTILE)
        key = {"twilio": "Body", "vonage": "text", "plivo": "Text"}.get(provider)
        if key:
            fx["params"][key] = text
        elif provider == "telnyx":
            fx["payload"]["data"]["payload"]["text"] = text
        else:
            fx["payload"]["body"] = text
    path = fx["path"]
    if provider in FORM_PROVIDERS:
        pairs = _mutated_pairs(draw, fx["params"])
        shape = draw(st.sampled_from(["form", "form", "form", "bad-utf8", "json", "wrong-type"]))
        if shape == "bad-utf8":  # raw bytes that are not UTF-8, and percent-escapes that are not either
            garbage = draw(st.binary(min_size=1, max_size=8).filter(lambda b: _not_utf8(b)))
            body = urlencode(pairs).encode() + b"&X=" + garbage + b"&Y=" + quote(garbage).encode()
            return Hostile(provider, path, FORM, body, None, signed=signed, note="bad-utf8")
        if shape == "json":
            body = json.dumps(dict(pairs)).encode()  # Vonage may POST JSON: prepare() signs inside it
            return Hostile(
                provider,
                path,
                JSON,
                body,
                pairs if provider == "vonage" else None,
                signed=signed,
                note="json",
            )
        ct = FORM if shape == "form" else draw(st.sampled_from(WRONG_TYPES))
        method = "GET" if provider == "vonage" and draw(st.booleans()) and shape == "form" else "POST"
        return Hostile(provider, path, ct, urlencode(pairs).encode(), pairs, method=method, signed=signed)
    payload = _mutated_json(draw, fx["payload"])
    shape = draw(st.sampled_from(["json", "json", "json", "raw", "wrong-type"]))
    if shape == "raw":  # not UTF-8, truncated, not an object, NaN, deep nesting
        body = draw(
            st.sampled_from(
                [
                    b"\xff\xfe{}",
                    b'{"data": ',
                    b"[]",
                    b'"x"',
                    b'{"data": NaN}',
                    b"\x00",
                    b"[" * 5000 + b"]" * 5000,
                    b'{"data":{"payload":1e99999}}',
                ]
            )
            | st.binary(max_size=64)
        )
        return Hostile(provider, path, JSON, body, None, signed=signed, note="raw")
    body = json.dumps(payload).encode()  # lone surrogates become \ud800 escapes, as any JSON encoder writes
    ct = JSON if shape == "json" else draw(st.sampled_from(WRONG_TYPES))
    return Hostile(provider, path, ct, body, None, signed=signed)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class _Multi(dict[str, list[str]]):
    """Repeated form fields as Twilio's RequestValidator reads them (its Flask MultiDict support)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def prepare(req: Hostile, now: float) -> tuple[str, str, dict[str, str], bytes]:
    """method, path (with query), headers, body — signed with the provider's SDK when ``req.signed``."""
    headers = {"content-type": req.content_type} if req.content_type else {}
    path, body, method = req.path, req.body, req.method
    if req.provider == "vonage":
        # The signature travels inside the parameters: add timestamp, nonce and sig (or leave them out).
        params = dict(req.pairs) if req.pairs is not None else {}
        params.update(timestamp=str(int(now)), nonce="6ee1b5b0")
        if req.signed:
            data = "".join(
                f"&{k}={str(v).replace('&', '_').replace('=', '_')}" for k, v in sorted(params.items())
            )
            params["sig"] = hashlib.md5((data + signing.VONAGE_SECRET).encode()).hexdigest()
        if req.pairs is None:
            return method, path, headers, body
        if method == "GET":
            return "GET", f"{path}?{urlencode(params)}", {}, b""
        if req.content_type == JSON:
            return method, path, headers, json.dumps({**dict(req.pairs), **params}).encode()
        pairs = [p for p in req.pairs if p[0] not in params] + list(params.items())
        return method, path, headers, urlencode(pairs).encode()
    if not req.signed:
        return method, path, headers, body
    if req.provider == "twilio":
        from twilio.request_validator import RequestValidator

        validator = RequestValidator(signing.TWILIO_TOKEN)
        if req.pairs is None:  # any other body: covered by its hash in the signed URL (bodySHA256)
            path = f"{path}?bodySHA256={hashlib.sha256(body).hexdigest()}"
            headers["x-twilio-signature"] = validator.compute_signature(BASE + path, {})
        else:
            multi = _Multi()
            for name, value in req.pairs:
                multi.setdefault(name, []).append(value)
            headers["x-twilio-signature"] = validator.compute_signature(BASE + path, multi)
        return method, path, headers, body
    if req.provider == "plivo":
        from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

        nonce = f"nonce{int(now)}"
        params = dict(req.pairs or [])
        signed = construct_post_url(BASE + path, params).decode()  # as the SDK's validate_v3_signature
        sig = get_signature_v3(signing.PLIVO_TOKEN.encode(), signed, nonce.encode())
        headers.update({"x-plivo-signature-v3": sig.decode(), "x-plivo-signature-v3-nonce": nonce})
        return method, path, headers, body
    if req.provider == "telnyx":
        stamp = str(int(now))
        sig = signing.TELNYX_KEY.sign(stamp.encode() + b"|" + body).signature
        headers.update(
            {"telnyx-signature-ed25519": base64.b64encode(sig).decode(), "telnyx-timestamp": stamp}
        )
        return method, path, headers, body
    from optline.adapters.providers.simulator import webhook

    headers[webhook.HEADER] = webhook.sign(body, signing.SECRET_KEY)
    return method, path, headers, body
