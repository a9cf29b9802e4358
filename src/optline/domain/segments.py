"""SMS segment counting: GSM-7 (extension-table characters count two) versus UCS-2.

A single SMS carries 160 GSM-7 characters or 70 UCS-2 code units; a concatenated message loses room to the
header in every part (153 / 67). One character outside GSM-7 (a curly quote, an emoji) turns the whole
message into UCS-2 and can more than double its cost, so ``count`` names the characters that did it and
``gsm7_rewrite`` offers the plain-GSM text.
"""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 basic character set.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each character is sent as ESC + char, so it counts two.
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

# Look-alikes that editors and phones type, and their GSM-7 spelling.
GSM7_REWRITES: dict[str, str] = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u200b": "", "\u2022": "*", "\u00b7": ".",
    "\u00e1": "a", "\u00ed": "i", "\u00f3": "o", "\u00fa": "u", "\u00e2": "a", "\u00ea": "e",
    "\u00ee": "i", "\u00f4": "o", "\u00fb": "u", "\u00e3": "a", "\u00f5": "o", "\u00e7": "c",
    "\u00c1": "A", "\u00cd": "I", "\u00d3": "O", "\u00da": "U", "\u00c3": "A", "\u00d5": "O",
    "\u00c0": "A", "\u00c2": "A", "\u00ca": "E", "\u00cb": "E", "\u00eb": "e", "\u00ef": "i",
}  # fmt: skip

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int
    ucs2_chars: tuple[str, ...]  # the characters that forced UCS-2, in order of appearance, unique
    rewrite: str | None  # a GSM-7 version of the text when every offending character has a rewrite

    @property
    def is_gsm7(self) -> bool:
        return self.encoding == "GSM-7"


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def gsm7_units(text: str) -> int:
    """Septets: extension-table characters take two (escape + character)."""
    return len(text) + sum(text.count(ch) for ch in set(text) & GSM7_EXTENSION)


def ucs2_units(text: str) -> int:
    """UTF-16 code units: an emoji outside the BMP takes two."""
    return len(text.encode("utf-16-le")) // 2


def gsm7_rewrite(text: str) -> str | None:
    """The text with look-alikes replaced by GSM-7 characters, or None when something has no rewrite."""
    out = "".join(GSM7_REWRITES.get(ch, ch) for ch in text)
    return out if is_gsm7(out) else None


def _segments(units: int, single: int, multi: int) -> tuple[int, int]:
    if units <= single:
        return (1 if units else 0), single
    return -(-units // multi), multi


_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


def count(text: str) -> SegmentInfo:
    # Set operations first: dispatch counts every message it hands over, and nearly all are plain GSM-7.
    chars = set(text)
    if chars <= _GSM7_ALL:
        units = gsm7_units(text)
        segs, per = _segments(units, GSM7_SINGLE, GSM7_MULTI)
        return SegmentInfo("GSM-7", units, segs, per, (), None)
    offending = tuple(dict.fromkeys(ch for ch in text if ch not in _GSM7_ALL))
    units = ucs2_units(text)
    segs, per = _segments(units, UCS2_SINGLE, UCS2_MULTI)
    return SegmentInfo("UCS-2", units, segs, per, offending, gsm7_rewrite(text))


def describe(info: SegmentInfo) -> str:
    """One line for lint output and the CLI."""
    line = f"{info.segments} segment(s), {info.encoding}, {info.units} units"
    if info.ucs2_chars:
        names = ", ".join(f"{ch!r} (U+{ord(ch[0]):04X})" for ch in info.ucs2_chars)
        line += f"; UCS-2 forced by {names}"
        if info.rewrite is not None:
            line += f"; GSM-7 rewrite: {count(info.rewrite).segments} segment(s)"
    return line
