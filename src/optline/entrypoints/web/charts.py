"""Server-rendered SVG charts: no JavaScript, no library, readable without colour (labels and titles).

Colours come from classes in app.css (the CSP forbids inline styles); each mark carries a <title>, so a
hover or a screen reader gives the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

from optline.services.dashboard import DayPoint


def _nice_max(value: float, minimum: float) -> float:
    """A round axis maximum ≥ value (1, 2, 2.5, 5 × 10^n)."""
    value = max(value, minimum)
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp >= value:
            return step * exp
    return 10 * exp  # pragma: no cover


def _fmt_pct(value: float) -> str:
    pct = value * 100
    return f"{pct:.0f}%" if pct >= 10 or pct == int(pct) else f"{pct:.1f}%"


def trend_chart(points: Sequence[DayPoint], *, compact: bool = False) -> Markup:
    """Daily opt-outs (bars, left axis) and the trailing 7-day opt-out rate of messages sent (line, right axis)."""
    # The compact drawing is for phones: fewer units across, so the same labels read larger.
    w, h, left, right, top, bottom = (420, 280, 34, 48, 18, 34) if compact else (760, 260, 44, 52, 18, 34)
    cls = "chart compact" if compact else "chart wide"
    ident = "trend-c" if compact else "trend"
    pw, ph = w - left - right, h - top - bottom
    n = max(len(points), 1)
    slot = pw / n
    max_out = _nice_max(max((p.optouts for p in points), default=0), 4)
    rates = [p.rate for p in points if p.rate is not None]
    max_rate = _nice_max(max(rates, default=0.0), 0.01)
    total_out = sum(p.optouts for p in points)
    total_sent = sum(p.sent for p in points)
    avg = f"{_fmt_pct(total_out / total_sent)} of messages sent" if total_sent else "no messages sent"
    parts = [
        f'<svg class="{cls}" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">Opt-outs per day, last {len(points)} days</title>',
        f'<desc id="{ident}-desc">{total_out} opt-outs in total; overall rate {avg}.</desc>',
    ]
    for i in range(5):  # grid and both axes' labels
        y = top + ph - ph * i / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{max_out * i / 4:g}</text>'
        )
        parts.append(
            f'<text class="axis rate" x="{left + pw + 8}" y="{y + 4:.1f}">{_fmt_pct(max_rate * i / 4)}</text>'
        )
    for i, p in enumerate(points):
        x = left + i * slot
        bh = ph * p.optouts / max_out
        label = f"{p.day:%b %-d}: {p.optouts} opt-out{'s' if p.optouts != 1 else ''}, {p.sent} sent"
        if p.rate is not None:
            label += f", rate {_fmt_pct(p.rate)}"
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.15:.1f}" y="{top + ph - bh:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(bh, 0):.1f}" rx="2"><title>{escape(label)}</title></rect>'
        )
        if i % max(1, n // (3 if compact else 6)) == 0:
            parts.append(
                f'<text class="axis" x="{x + slot / 2:.1f}" y="{h - 12}" text-anchor="middle">{p.day:%b %-d}</text>'
            )
    # The rate line breaks where there is no rate (nothing sent in the window) rather than bridging the gap.
    runs: list[list[tuple[float, float]]] = [[]]
    for i, p in enumerate(points):
        if p.rate is None:
            runs.append([])
            continue
        runs[-1].append((left + i * slot + slot / 2, top + ph - ph * p.rate / max_rate))
    coords = [xy for run in runs for xy in run]
    for run in runs:
        if len(run) > 1:
            path = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y) in enumerate(run))
            parts.append(f'<path class="line" d="{path}"/>')
    for x, y in coords:
        parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="{2.5 if compact else 3.5}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def campaign_rates_chart(
    rows: Sequence[dict[str, Any]], critical: float | None, *, compact: bool = False
) -> Markup:
    """One horizontal bar per sent campaign: its opt-out rate, spikes in red, the critical level dashed."""
    rows = [r for r in rows if r["optout_rate"] is not None][:12]
    if not rows:
        return Markup("")
    bar_h, gap, left, right, top = 22, 12, 190, 70, 10
    w, chars = 760, 26
    if compact:
        left, right, w, chars = 130, 56, 420, 16
    h = top + len(rows) * (bar_h + gap) + 22
    pw = w - left - right
    max_rate = _nice_max(max([r["optout_rate"] for r in rows] + [critical or 0.0]), 0.01)
    parts = [
        f'<svg class="chart {"compact" if compact else "wide"}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-labelledby="camp-title{w}"><title id="camp-title{w}">Opt-out rate per campaign</title>',
    ]
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        bw = pw * r["optout_rate"] / max_rate
        name = str(r["name"])
        short = name if len(name) <= chars else name[: chars - 1] + "…"
        cls = "hbar spike" if r["spike"] else "hbar"
        label = f"{name}: {r['optouts']} opt-outs of {r['sent']} sent ({_fmt_pct(r['optout_rate'])})"
        parts.append(
            f'<text class="axis name" x="{left - 10}" y="{y + bar_h / 2 + 5}" text-anchor="end">{escape(short)}</text>'
        )
        parts.append(
            f'<rect class="{cls}" x="{left}" y="{y}" width="{max(bw, 2):.1f}" height="{bar_h}" rx="3">'
            f"<title>{escape(label)}</title></rect>"
        )
        parts.append(
            f'<text class="value" x="{left + max(bw, 2) + 8:.1f}" y="{y + bar_h / 2 + 5}">{_fmt_pct(r["optout_rate"])}</text>'
        )
    if critical is not None:
        tx = left + pw * critical / max_rate
        parts.append(f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{h - 20}"/>')
        parts.append(
            f'<text class="axis" x="{tx:.1f}" y="{h - 6}" text-anchor="middle">critical {_fmt_pct(critical)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def delivery_bar(row: dict[str, Any]) -> Markup:
    """A thin stacked bar: delivered / sent (not yet delivered) / suppressed / failed / pending."""
    total = row["total"] or 0
    if not total:
        return Markup('<span class="muted">no messages yet</span>')
    segments = [
        ("delivered", row["delivered"]),
        ("sent", row["awaiting"]),
        ("suppressed", row["suppressed"]),
        ("failed", row["failed"]),
        ("pending", row["pending"]),
    ]
    x = 0.0
    parts = [
        '<svg class="stack" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label="delivery">'
    ]
    for cls, count in segments:
        count = max(int(count or 0), 0)
        if not count:
            continue
        width = 100 * count / total
        parts.append(
            f'<rect class="seg {cls}" x="{x:.2f}" y="0" width="{width:.2f}" height="8"><title>{count} {cls}</title></rect>'
        )
        x += width
    parts.append("</svg>")
    return Markup("".join(parts))


CHANNEL_LABELS = {
    "sms_keyword": "Replied STOP", "sms_text": "Said it in words", "web": "Tapped the link",
    "admin": "Decided in review", "provider": "Carrier / provider", "api": "Through the API", "import": "Import",
}  # fmt: skip


def channel_bars(channels: Sequence[tuple[str, int]], *, unit_labels: bool = True) -> Markup:
    """Labelled horizontal bars with counts and shares (how people opted out; findings by reason)."""
    total = sum(n for _, n in channels)
    if not total:
        return Markup('<p class="empty">No opt-outs in the last 30 days.</p>')
    rows = []
    for channel, n in channels:
        share = n / total
        label = CHANNEL_LABELS.get(channel, channel) if unit_labels else channel
        rows.append(
            f'<li><span class="ch-label">{escape(label)}</span>'
            f'<svg class="ch-bar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">'
            f'<rect class="ch-{escape(channel)}" width="{max(share * 100, 1):.1f}" height="10" rx="2"/></svg>'
            f'<span class="ch-value">{n:,} <span class="muted">({share:.0%})</span></span></li>'
        )
    return Markup(f'<ul class="channels">{"".join(rows)}</ul>')
