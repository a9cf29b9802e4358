"""Programs use cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from optline.adapters.clock import Clock
from optline.adapters.db import programs as repo
from optline.domain import quiet_hours, replies
from optline.domain.compose import optout_link_on
from optline.domain.phones import InvalidPhoneNumber, normalize_sender, normalize_short_code, read_sender
from optline.domain.support_contact import read_support_contact


def default_help_text(brand: str, frequency: str, contact: str) -> str:
    """The HELP reply unless the operator writes one: brand, where to get help, frequency, rates, STOP
    (one text, translated in domain/replies.py when a reply in another language asks for help)."""
    return replies.default_help(brand, frequency, contact)


def create_program(
    conn: Connection, clock: Clock, *, default_region: str = "US", **values: Any
) -> dict[str, Any]:
    """Create a program (CLI, API and dashboard all come here). Sender numbers are stored in one form
    (E.164, or a short code's digits) so that inbound replies find their program; a sender that is neither
    raises InvalidPhoneNumber naming it."""
    values = {k: v for k, v in values.items() if v is not None}
    values["name"] = read_program_name(values.get("name"))
    senders = [normalize_sender(n, default_region) for n in values.get("sender_numbers") or []]
    values["sender_numbers"] = list(dict.fromkeys(senders))  # "(415) 555-0100" and "+14155550100" are one
    if values.get("short_code") is not None:
        values["short_code"] = normalize_short_code(values["short_code"])
    values["join_keywords"] = [k.strip().upper() for k in values.get("join_keywords", []) if k.strip()]
    values["settings"] = {
        **(values.get("settings") or {}),
        "optout_link": read_optout_link(values.pop("optout_link", True)),
    }
    values.setdefault("frequency_text", "Msg frequency varies")
    # Required even with a custom help text: the contact is how the dashboard and HELP replies in other
    # languages name customer care, and a program nobody can reach should not send.
    values["help_contact"] = read_support_contact(values.get("help_contact"), default_region)
    if not values.get("help_text"):
        values["help_text"] = default_help_text(
            values["brand"], values["frequency_text"], values["help_contact"]
        )
    return repo.create(conn, created_at=clock.now(), **values)


class ProgramNameError(ValueError):
    """A program name that cannot be one; the message says why."""


def read_program_name(value: object) -> str:
    """A program's name as stored. It is part of addresses (``/join/NAME``, ``/v1/programs/NAME``): a slash
    would make it two path segments that no route matches (browsers also read a backslash as one), and a
    control character cannot be typed or shown."""
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        raise ProgramNameError("a program needs a name")
    # Lone surrogates: a command-line argument that was not UTF-8 (no database could store it).
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) < 0xE000})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ProgramNameError(
            f"program name {name!r}: no {shown} (the name is part of addresses: /join/NAME, /v1/programs/NAME)"
        )
    if len(name) > 100:
        raise ProgramNameError(f"program name: at most 100 characters, not {len(name)}")
    return name


def list_programs(conn: Connection) -> list[dict[str, Any]]:
    return repo.list_all(conn)


def get_program(conn: Connection, name: str) -> dict[str, Any] | None:
    return repo.get_by_name(conn, name)


def require_program(conn: Connection, name: str) -> dict[str, Any]:
    program = repo.get_by_name(conn, name)
    if program is None:
        known = ", ".join(p["name"] for p in repo.list_all(conn)) or "none yet"
        raise LookupError(f"no program named {name!r} (programs: {known})")
    return program


def program_for_sender(conn: Connection, to_phone: str, default_region: str = "US") -> dict[str, Any] | None:
    """The program that owns the number (or short code) an inbound message was sent to, compared in
    normalised form on both sides (a sender stored before normalisation still matches).

    Answered from a per-process table of normalised senders (adapters/db/programs.py ``cached``: every
    inbound reply asks, and the answer changes only when a program does); a number the table does not know
    is looked up again in the database before the reply is called unrouted."""
    wanted = {to_phone.strip(), read_sender(to_phone, default_region)} - {None}
    for fresh in (False, True):
        table = repo.cached(
            conn, ("senders", default_region), lambda c: _sender_table(c, default_region), fresh=fresh
        )
        found = [table[number] for number in wanted if number in table]
        if found:
            return dict(min(found, key=lambda owner: owner[0])[1])
    return None


def _sender_table(conn: Connection, region: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Normalised sender number or short code -> (position by name, program): the first program by name
    owns a number that two programs list, as the linear scan this replaces decided."""
    table: dict[str, tuple[int, dict[str, Any]]] = {}
    for position, program in enumerate(repo.list_all(conn)):
        owned = [
            *(program["sender_numbers"] or []),
            *([program["short_code"]] if program["short_code"] else []),
        ]
        for number in owned:
            table.setdefault(_stored_form(number, region), (position, program))
    return table


def _stored_form(number: str, region: str) -> str:
    try:
        return normalize_sender(number, region)
    except InvalidPhoneNumber:
        return number


OPTOUT_INSTRUCTION_POLICIES = ("every", "monthly")


def read_optout_link(value: object) -> bool:
    """The ``optout_link`` setting (domain/compose.py adds the link); one check for create and update."""
    if not isinstance(value, bool):
        raise ValueError(f"optout_link: true or false, not {value!r}")
    return value


def read_quiet_hours(start: str, end: str) -> dict[str, str] | None:
    """The ``quiet_hours`` setting from a sending window's two times; None (nothing stored) when both are
    empty or the window is the law's own. QuietHoursError names what is wrong."""
    if not start.strip() and not end.strip():
        return None
    window = quiet_hours.read_window(start, end)
    if window == quiet_hours.FEDERAL:
        return None
    return {"start": f"{window.start:%H:%M}", "end": f"{window.end:%H:%M}"}


def update_program(
    conn: Connection,
    program_id: int,
    *,
    default_region: str = "US",
    help_contact: str,
    help_text: str = "",
    frequency_text: str = "",
    sender_numbers: list[str] | None = None,
    optout_scope: str,
    optout_instruction: str = "every",
    max_segments: int | None = None,
    frequency_cap: dict[str, Any] | None = None,
    optout_link: bool = True,
    quiet_start: str = "",
    quiet_end: str = "",
) -> dict[str, Any]:
    """Change a program's settings (the dashboard's program page). The same rules as ``create_program``
    (senders in one stored form, a real support contact); the brand and name stay: the ledger names them.

    A HELP text written by the operator must name the support contact: "reply HELP for help" answered with
    itself sends the person in a circle."""
    from sqlalchemy import update

    from optline.adapters.db.tables import programs as table
    from optline.domain import caps

    # Locked: the settings JSON is written whole from what is read here, and two edits at once (two PATCHes
    # of different settings) must each see the other's, not put back what the other changed.
    program = repo.get(conn, program_id, for_update=True)
    if program is None:
        raise LookupError(f"no program with id {program_id}")
    contact = read_support_contact(help_contact, default_region)
    if optout_scope not in ("brand", "program"):
        raise ValueError("an opt-out stops the whole brand or this program: choose 'brand' or 'program'")
    if optout_instruction not in OPTOUT_INSTRUCTION_POLICIES:
        raise ValueError(f"opt-out instruction: one of {', '.join(OPTOUT_INSTRUCTION_POLICIES)}")
    frequency = frequency_text.strip() or program["frequency_text"]
    text = " ".join(help_text.split())
    if text and contact.lower() not in text.lower():
        raise ValueError(f"the HELP reply must tell people how to reach you: include {contact}")
    settings = {**(program.get("settings") or {}), "optout_instruction": optout_instruction,
                "optout_link": read_optout_link(optout_link)}  # fmt: skip
    window = read_quiet_hours(quiet_start, quiet_end)
    if window:
        settings["quiet_hours"] = window
    else:
        settings.pop("quiet_hours", None)
    if max_segments is not None:
        if not 1 <= max_segments <= 10:
            raise ValueError("the segment limit must be between 1 and 10")
        settings["max_segments"] = max_segments
    if frequency_cap:
        caps.from_settings(
            {"frequency_cap": frequency_cap}
        )  # CapSettingError (a ValueError) names the problem
        settings["frequency_cap"] = frequency_cap
    else:
        settings.pop("frequency_cap", None)
    senders = [normalize_sender(n, default_region) for n in (sender_numbers or []) if n.strip()]
    values = {
        "help_contact": contact, "frequency_text": frequency,
        "help_text": text or default_help_text(program["brand"], frequency, contact),
        "sender_numbers": list(dict.fromkeys(senders)), "optout_scope": optout_scope, "settings": settings,
    }  # fmt: skip
    row = conn.execute(
        update(table).where(table.c.id == program_id).values(**values).returning(*table.c)
    ).one()
    repo.forget(conn)  # inbound routing caches programs (adapters/db/programs.py)
    return dict(row._mapping)


# What ``change_settings`` may change alone; the dashboard's page edits everything through update_program.
CHANGEABLE = ("optout_link", "optout_instruction", "quiet_start", "quiet_end")


def change_settings(
    conn: Connection, program: dict[str, Any], *, default_region: str = "US", **changes: Any
) -> dict[str, Any]:
    """Change some of a program's settings and keep the rest (``PATCH /v1/programs/{name}``, ``optline
    programs set``). The program's current values and the changes go through ``update_program``, so each
    rule is checked in one place whichever way a setting is edited."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise ValueError(f"cannot change {', '.join(unknown)} here (settings: {', '.join(CHANGEABLE)})")
    # The values kept are read again under the row's lock (update_program's): the caller's copy may be older
    # than a change committed since, which the write below would otherwise undo.
    program = repo.get(conn, program["id"], for_update=True) or program
    settings = program.get("settings") or {}
    window = settings.get("quiet_hours") or {}
    current: dict[str, Any] = {
        "help_contact": program.get("help_contact") or "", "help_text": program["help_text"],
        "frequency_text": program["frequency_text"], "sender_numbers": list(program.get("sender_numbers") or []),
        "optout_scope": program["optout_scope"], "optout_instruction": settings.get("optout_instruction", "every"),
        "max_segments": settings.get("max_segments"), "frequency_cap": settings.get("frequency_cap"),
        "optout_link": optout_link_on(settings), "quiet_start": window.get("start", ""),
        "quiet_end": window.get("end", ""),
    }  # fmt: skip
    return update_program(conn, program["id"], default_region=default_region, **{**current, **changes})
