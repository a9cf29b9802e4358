"""The consent proof rendered: JSON (what a machine checks), plain text, HTML and PDF (what a person hands
a lawyer; both print on A4 and Letter). Every format renders the same dict from services.proof."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape

Format = Literal["text", "json", "html", "pdf"]
FORMATS: tuple[str, ...] = ("text", "json", "html", "pdf")
MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "json": "application/json", "html": "text/html; charset=utf-8",
               "pdf": "application/pdf"}  # fmt: skip
# A Unicode TrueType font for the PDF (evidence is in any language). Debian: fonts-dejavu-core.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/local/share/fonts/truetype/dejavu"))

# The directory, not PackageLoader("optline.entrypoints.web"): that imports the web package (FastAPI and the
# whole dashboard, ~0.5 s) in every CLI start, since the proof command imports this module.
_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "web" / "templates"),
    autoescape=select_autoescape(["html"]),
)


class FontMissing(RuntimeError):
    pass


def render(bundle: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(bundle, indent=2, ensure_ascii=False).encode()
    if fmt == "text":
        return to_text(bundle).encode()
    if fmt == "html":
        return _env.get_template("proof.html").render(p=bundle, title=_title(bundle)).encode()
    if fmt == "pdf":
        return to_pdf(bundle)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _title(bundle: dict[str, Any]) -> str:
    return f"Consent evidence for {bundle['contact']['phone']}"


def _evidence(evidence: dict[str, Any]) -> list[str]:
    return [f"{k.replace('_', ' ')}: {v}" for k, v in evidence.items()]


def lines(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(style, text) lines shared by the text and PDF formats: h1, h2, b (bold), p, i (indented under b)."""
    v = bundle["verification"]
    out: list[tuple[str, str]] = [
        ("h1", _title(bundle)),
        ("p", f"Generated {bundle['generated_at']} by optline ({bundle['format']})."),
        ("h2", "Verification"),
        ("b", v["statement"]),
        ("p", f"Events checked: {v['events_checked']}. Checkpoints: {v['checkpoint_source']}."),
    ]
    if v["latest_checkpoint"]:
        c = v["latest_checkpoint"]
        signed = f"{c['where']}, signed {c['created_at']}"
        out.append(("p", f"Latest checkpoint: {signed}, digest {c['digest_id']} = {c['digest']}"))
    out.append(("h2", f"Consent history ({len(bundle['consent_events'])} events)"))
    for e in bundle["consent_events"]:
        what = f"#{e['seq']} {e['action'].replace('_', ' ')} via {e['channel'].replace('_', ' ')}"
        where = e["program"] or f"all of {e['brand']}"
        out.append(("b", f"{what} · {where} · occurred {e['occurred_at']}, recorded {e['recorded_at']}"))
        out += [("i", line) for line in _evidence(e["evidence"])]
        out.append(("i", f"covered by: {e['covered_by']}"))
        out.append(("i", f"hash {e['hash']}"))
    out.append(("h2", f"Messages ({len(bundle['messages'])})"))
    for m in bundle["messages"]:
        auth = m["authorised_by"]
        campaign = f" · {m['campaign']}" if m["campaign"] else ""
        reason = f" ({m['reason']})" if m["reason"] else ""
        out.append(
            ("b", f"Message {m['id']} · {m['kind']} · {m['program']}{campaign} · {m['status']}{reason}")
        )
        out.append(
            (
                "i",
                f"created {m['created_at']}; sent {m['sent_at'] or '-'}; delivered {m['delivered_at'] or '-'}",
            )
        )
        if auth:
            action = auth["action"].replace("_", " ")
            out.append(("i", f"authorised by consent event #{auth['seq']} ({action}, {auth['occurred_at']})"))
        else:
            out.append(("i", m["authorised_note"]))
        out.append(("i", f"opt-out instruction: {m['optout_instruction'] or 'none'}"))
        out.append(("i", f"text: {m['body']}"))
    out.append(("h2", f"Opt-outs ({len(bundle['opt_outs'])})"))
    for o in bundle["opt_outs"]:
        scope = o["program"] or f"all of {o['brand']}"
        channel = o["channel"].replace("_", " ")
        out.append(("b", f"#{o['seq']} opt-out via {channel} · {scope} · recorded {o['recorded_at']}"))
        first = o["first_suppressed"]
        took = (
            f"suppression took effect: message {first['message_id']} suppressed at {first['at']} ({first['reason']})"
            if first
            else "no message was due after it, so none had to be suppressed"
        )
        out.append(("i", took))
        after = o["sent_after_on_older_consent"]
        out.append(
            ("i", f"messages handed over after it on older consent: {', '.join(map(str, after)) or 'none'}")
        )
    return out


def to_text(bundle: dict[str, Any]) -> str:
    parts: list[str] = []
    for style, text in lines(bundle):
        if style in ("h1", "h2"):
            parts += ["", text, ("=" if style == "h1" else "-") * len(text)]
        else:
            parts.append(("    " if style == "i" else "") + text)
    return "\n".join(parts).lstrip() + "\n"


def _font_dir() -> Path:
    for d in FONT_DIRS:
        if (d / "DejaVuSans.ttf").exists() and (d / "DejaVuSans-Bold.ttf").exists():
            return d
    raise FontMissing(
        "the PDF needs the DejaVu Sans font: install it (Debian/Ubuntu: apt-get install fonts-dejavu-core)"
    )


def to_pdf(bundle: dict[str, Any], paper: str = "A4") -> bytes:
    """A4 by default (Letter with ``paper='Letter'``); margins fit both, text wraps, pages are numbered."""
    from fpdf import FPDF

    fonts = _font_dir()
    title = _title(bundle)

    class Proof(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("DejaVu", size=7)
            self.cell(0, 5, f"{title} · page {self.page_no()}/{{nb}}", align="C")

    pdf = Proof(format=paper)
    pdf.set_margins(16, 16, 16)
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_title(title)
    pdf.set_creator("optline")
    pdf.add_page()
    sizes = {"h1": 15, "h2": 12, "b": 9, "p": 8.5, "i": 8.5}
    for style, text in lines(bundle):
        pdf.set_font("DejaVu", "" if style in ("p", "i") else "B", sizes[style])
        if style in ("h2", "b"):
            pdf.ln(3 if style == "h2" else 1)
        if style == "i":
            pdf.set_x(pdf.l_margin + 5)
        pdf.multi_cell(0, sizes[style] * 0.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
        if style == "h1":
            pdf.ln(2)
    return bytes(pdf.output())
