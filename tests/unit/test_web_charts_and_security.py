"""Pure parts of the pages: the SVG charts, the rate limiter, the signed opt-out form token, origin checks."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

from starlette.requests import Request

from optline.entrypoints.web import charts
from optline.entrypoints.web.security import FormSigner, same_origin
from optline.services.dashboard import DayPoint

SVG = "{http://www.w3.org/2000/svg}"


def _points(optouts: list[int], rolling_sent: list[int]) -> list[DayPoint]:
    start = date(2026, 11, 1)
    return [
        DayPoint(start + timedelta(days=i), n, 0, rolling_optouts=n, rolling_sent=s)
        for i, (n, s) in enumerate(zip(optouts, rolling_sent, strict=True))
    ]


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_trend_chart_draws_a_bar_per_day_and_breaks_the_line_where_nothing_was_sent() -> None:
    points = _points([1, 2, 0, 0, 5, 1], [100, 100, 0, 0, 100, 100])
    svg = _parse(charts.trend_chart(points))
    assert len(svg.findall(f"{SVG}rect")) == 6
    paths = svg.findall(f"{SVG}path")
    assert len(paths) == 2  # two runs of days with a rate, not one line bridging the gap
    titles = [t.text or "" for t in svg.iter(f"{SVG}title")]
    assert any("2 opt-outs" in t for t in titles) and svg.get("role") == "img"


def test_trend_chart_with_no_data_is_still_a_valid_chart() -> None:
    svg = _parse(charts.trend_chart(_points([0] * 30, [0] * 30), compact=True))
    assert len(svg.findall(f"{SVG}rect")) == 30 and not svg.findall(f"{SVG}path")


def test_campaign_chart_marks_spikes_and_escapes_names() -> None:
    rows = [
        {"name": "<b>Flash</b> & sale", "optout_rate": 0.08, "optouts": 8, "sent": 100, "spike": True},
        {"name": "Normal", "optout_rate": 0.01, "optouts": 1, "sent": 100, "spike": False},
        {"name": "Not sent", "optout_rate": None, "optouts": 0, "sent": 0, "spike": False},
    ]
    markup = str(charts.campaign_rates_chart(rows, critical=0.02))
    svg = _parse(markup)
    classes = [r.get("class") for r in svg.findall(f"{SVG}rect")]
    assert classes == ["hbar spike", "hbar"]
    assert "<b>" not in markup and "&lt;b&gt;Flash" in markup


def test_form_token_is_bound_to_its_link_and_signed() -> None:
    signer = FormSigner("k" * 40, salt="s", max_age_seconds=60)
    token = signer.sign("abcdefghij")
    assert signer.valid(token, "abcdefghij")
    assert not signer.valid(token, "bcdefghijk")
    assert not signer.valid(token + "x", "abcdefghij")
    assert not FormSigner("other" * 8, salt="s", max_age_seconds=60).valid(token, "abcdefghij")
    assert not signer.valid(None, "abcdefghij")


def _request(headers: dict[str, str]) -> Request:
    scope = {
        "type": "http", "method": "POST", "path": "/u/x", "scheme": "http", "server": ("testserver", 80),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"host", b"testserver")],
        "query_string": b"", "root_path": "",
    }  # fmt: skip
    return Request(scope)


def test_same_origin() -> None:
    public = "https://sms.example.com"
    assert same_origin(_request({}), public)
    assert same_origin(_request({"origin": "http://testserver"}), public)
    assert same_origin(_request({"origin": "https://sms.example.com"}), public)
    assert not same_origin(_request({"origin": "https://evil.example"}), public)
    assert not same_origin(_request({"sec-fetch-site": "cross-site"}), public)
    assert not same_origin(_request({"sec-fetch-site": "same-site"}), public)
    assert not same_origin(_request({"origin": "null"}), public)
    assert same_origin(_request({"origin": "null", "sec-fetch-site": "same-origin"}), public)
