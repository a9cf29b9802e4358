"""Campaign lint: what carriers filter and what the law asks, found before anything is queued.

Errors block sending; warnings are shown. Program settings read here: ``max_segments`` (default 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optline.domain import compose, quiet_hours, segments
from optline.domain.optout_links import SAMPLE_TOKEN

# Public shorteners carriers filter (shared domains look like phishing). Use your own branded domain.
LINK_SHORTENERS = frozenset({
    "bit.ly", "tinyurl.com", "goo.gl", "ow.ly", "t.co", "is.gd", "buff.ly", "rebrand.ly", "cutt.ly",
    "shorturl.at", "rb.gy", "tiny.cc", "bl.ink", "s.id", "t.ly", "v.gd", "short.io", "lnkd.in",
})  # fmt: skip
_URL_HOST = re.compile(r"(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:/|\b)", re.IGNORECASE)
DEFAULT_MAX_SEGMENTS = 3


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    code: str
    message: str


@dataclass
class LintResult:
    findings: list[Finding]
    segments: segments.SegmentInfo | None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def plural_people(n: int) -> str:
    return f"{n:,} recipient{'' if n == 1 else 's'}"


def lint(
    template: str,
    *,
    brand: str,
    settings: Mapping[str, Any],
    known_fields: Iterable[str],
    public_url: str,
    marketing: bool = True,
    send_at: datetime | None = None,
    audience_zones: Iterable[str] = (),
    sample: Mapping[str, Any] | None = None,
    missing: Mapping[str, int] | None = None,
    recipients: int | None = None,
) -> LintResult:
    """``missing``: per field the template needs, how many of the ``recipients`` have no value for it.
    ``public_url``: where opt-out links point (OPTLINE_PUBLIC_URL); the segment count measures a link of
    exactly the length recipients get."""
    findings: list[Finding] = []
    try:
        used = compose.template_fields(template)
        required = compose.required_fields(template)
    except compose.TemplateError as exc:
        return LintResult([Finding("error", "syntax", str(exc))], None)
    known = set(known_fields) | compose.BUILTIN_FIELDS
    unknown = sorted(required - known)
    if unknown:
        findings.append(
            Finding(
                "error",
                "unknown_field",
                f"unknown template field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})",
            )
        )
    for field, count in sorted((missing or {}).items()):
        if count and field not in unknown:
            who = (
                f"{count:,} of {recipients:,} recipients" if recipients is not None else plural_people(count)
            )
            findings.append(
                Finding(
                    "warning",
                    "missing_field",
                    (
                        f"{who} {'has' if count == 1 else 'have'} no {field}: their messages would fail; "
                        f'give a fallback, e.g. {{{{ {field} | default("there") }}}}'
                    ),
                )
            )
    if not compose.has_brand(template, brand) and "brand" not in used:
        findings.append(
            Finding(
                "warning",
                "missing_brand",
                f"the text does not name the brand {brand!r}; it will be prefixed with '{brand}: '",
            )
        )
    if marketing and not compose.has_optout_instruction(template):
        policy = settings.get("optout_instruction", "every")
        when = "every message" if policy == "every" else "the first message of each month"
        added = (
            "'Reply STOP to opt out or tap <link>'"
            if compose.optout_link_on(settings)
            else "'Reply STOP to opt out'"
        )
        findings.append(
            Finding("warning", "missing_optout", f"no opt-out instruction; {added} is added to {when}")
        )
    for host in sorted({m.group(1).lower() for m in _URL_HOST.finditer(template)}):
        if host in LINK_SHORTENERS:
            findings.append(
                Finding(
                    "error",
                    "link_shortener",
                    f"public link shortener {host} is filtered by carriers; use a branded domain",
                )
            )
    info = None
    if not unknown:
        # Example values, long-ish and GSM-7, so the count is an honest estimate; the link is a real one's length.
        fields = {**{f: "x" * 10 for f in used}, **(sample or {})}
        try:
            text = compose.compose(
                template,
                brand=brand,
                program_name="",
                phone="",
                attributes=fields,
                locale=None,
                settings=settings,
                marketing=marketing,
                first_this_month=True,
                public_url=public_url,
                optout_token=SAMPLE_TOKEN,
            ).body
        except compose.TemplateError as exc:
            findings.append(Finding("error", "render", str(exc)))
        else:
            info = segments.count(text)
            limit = int(settings.get("max_segments", DEFAULT_MAX_SEGMENTS))
            if info.segments > limit:
                findings.append(
                    Finding(
                        "error",
                        "too_many_segments",
                        f"{info.segments} segments (limit {limit}): {segments.describe(info)}",
                    )
                )
            elif info.ucs2_chars:
                findings.append(Finding("warning", "ucs2", segments.describe(info)))
    if send_at is not None:
        zones = sorted(set(audience_zones))
        window = quiet_hours.program_window(settings)
        quiet = [z for z in zones if not quiet_hours.allowed_in(send_at, z, window)]
        if quiet:
            findings.append(
                Finding(
                    "warning",
                    "quiet_hours",
                    f"at {send_at:%Y-%m-%d %H:%M} UTC it is quiet hours in {', '.join(quiet[:5])}"
                    f"{' …' if len(quiet) > 5 else ''}; those recipients are deferred to "
                    f"{window.start:%H:%M} local",
                )
            )
    return LintResult(findings, info)
