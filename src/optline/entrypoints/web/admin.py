"""The dashboard's administration pages: API keys (created and shown once, listed with last use, revoked),
operators (added with a one-time password, disabled, password reset) and a program's settings."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from optline.adapters.db import api_keys
from optline.adapters.db import programs as program_repo
from optline.domain import caps, quiet_hours
from optline.domain.compose import optout_link_on
from optline.domain.lint import DEFAULT_MAX_SEGMENTS
from optline.domain.phones import InvalidPhoneNumber
from optline.domain.support_contact import SupportContactError
from optline.entrypoints.web.auth import CurrentUser, container_of, require_csrf
from optline.entrypoints.web.dashboard import page
from optline.entrypoints.web.params import RowId
from optline.services import programs as program_service
from optline.services import signup, users

router = APIRouter(include_in_schema=False)


def _keys_page(request: Request, user: dict[str, Any], status_code: int = 200, **ctx: Any) -> Response:
    with container_of(request).db.read() as conn:
        keys = api_keys.list_all(conn)
    return page(request, user, "api_keys.html", "api-keys", status_code, keys=keys, **ctx)


@router.get("/dashboard/api-keys")
def keys_page(request: Request, user: CurrentUser) -> Response:
    flash = (
        "Key revoked: it opens nothing from now on."
        if request.query_params.get("flash") == "revoked"
        else None
    )
    return _keys_page(request, user, flash_text=flash)


@router.post("/dashboard/api-keys")
def create_key(
    request: Request, user: CurrentUser, name: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = ""
) -> Response:
    """The new key is in this response only (no redirect): it is never stored or shown again."""
    require_csrf(request, csrf)
    name = name.strip()
    if not name or len(name) > 100:
        return _keys_page(
            request, user, 400, error="Name the key (who or what uses it), up to 100 characters."
        )
    container = container_of(request)
    with container.db.transaction() as conn:
        key = api_keys.create(conn, name, container.clock.now())
    return _keys_page(request, user, new_key=key, new_key_name=name)


@router.post("/dashboard/api-keys/{key_id}/revoke")
def revoke_key(
    request: Request, user: CurrentUser, key_id: RowId, csrf: Annotated[str, Form()] = ""
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    try:
        with container.db.transaction() as conn:
            api_keys.revoke(conn, key_id, container.clock.now())
    except LookupError as exc:
        return _keys_page(request, user, 404, error=str(exc))
    return RedirectResponse("/dashboard/api-keys?flash=revoked", status_code=303)


def _users_page(request: Request, user: dict[str, Any], status_code: int = 200, **ctx: Any) -> Response:
    with container_of(request).db.read() as conn:
        rows = users.list_all(conn)
    return page(request, user, "users.html", "users", status_code, operators=rows, **ctx)


@router.get("/dashboard/users")
def users_page(request: Request, user: CurrentUser) -> Response:
    flash = {"disabled": "User disabled; their sessions are ended.", "enabled": "User enabled."}.get(
        request.query_params.get("flash", "")
    )
    return _users_page(request, user, flash_text=flash)


@router.post("/dashboard/users")
def add_user(
    request: Request,
    user: CurrentUser,
    username: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    try:
        with container.db.transaction() as conn:
            password = users.add(conn, container.clock, username)
    except users.UserError as exc:
        return _users_page(request, user, 400, error=str(exc).capitalize() + ".")
    return _users_page(request, user, one_time=password, one_time_for=username.strip())


@router.post("/dashboard/users/{user_id}/{action}")
def change_user(
    request: Request, user: CurrentUser, user_id: RowId, action: str, csrf: Annotated[str, Form()] = ""
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    try:
        with container.db.transaction() as conn:
            if action in ("disable", "enable"):
                users.set_disabled(
                    conn, container.clock, user_id, action == "disable", by_user_id=int(user["id"])
                )
                return RedirectResponse(f"/dashboard/users?flash={action}d", status_code=303)
            if action == "reset-password":
                target = users.get(conn, user_id)
                if target is None:
                    raise users.UserError(f"no user with id {user_id}")
                password = users.reset_password(conn, str(target["username"]))
            else:
                return _users_page(request, user, 404, error=f"Unknown action {action!r}.")
    except users.UserError as exc:
        return _users_page(request, user, 409, error=str(exc).capitalize() + ".")
    return _users_page(request, user, one_time=password, one_time_for=target["username"])


def _program_form(program: dict[str, Any], disclosure_text: str) -> dict[str, Any]:
    settings = program.get("settings") or {}
    cap = settings.get("frequency_cap") or {}
    window = quiet_hours.program_window(settings)
    default = program_service.default_help_text(
        program["brand"], program["frequency_text"], program["help_contact"] or ""
    )
    return {
        "help_contact": program.get("help_contact") or "", "frequency_text": program["frequency_text"],
        "help_text": "" if program["help_text"] == default else program["help_text"],
        "senders": "\n".join(program.get("sender_numbers") or []), "optout_scope": program["optout_scope"],
        "optout_instruction": settings.get("optout_instruction", "every"),
        "optout_link": optout_link_on(settings),
        "max_segments": str(settings.get("max_segments", DEFAULT_MAX_SEGMENTS)),
        "cap_max": str(cap.get("max", "")), "cap_days": str(cap.get("days", 7)), "cap_action": cap.get("action", "defer"),
        "quiet_start": f"{window.start:%H:%M}", "quiet_end": f"{window.end:%H:%M}",
        "disclosure": disclosure_text,
    }  # fmt: skip


def _program_page(
    request: Request,
    user: dict[str, Any],
    program_id: int,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    flash: str | None = None,
) -> Response:
    with container_of(request).db.read() as conn:
        program = program_repo.get(conn, program_id)
        shown = signup.disclosure_shown(conn, program) if program else ""
    if program is None:
        return page(
            request,
            user,
            "program_edit.html",
            "programs",
            404,
            program=None,
            error=f"No program with id {program_id}.",
        )
    errors = errors or {}
    # Each error sits beside its field; the banner only says that something needs fixing (and says what
    # when it belongs to no field).
    banner = errors.get("") or ("Nothing was saved: fix the fields marked below." if errors else None)
    return page(
        request,
        user,
        "program_edit.html",
        "programs",
        status_code,
        program=program,
        form=form or _program_form(program, shown),
        errors=errors,
        error=banner,
        flash_text=flash,
        federal=quiet_hours.FEDERAL,
        public_url=container_of(request).settings.public_url.rstrip("/"),
    )


@router.get("/dashboard/programs/{program_id}")
def program_page(request: Request, user: CurrentUser, program_id: RowId) -> Response:
    flash = "Settings saved." if request.query_params.get("flash") == "saved" else None
    return _program_page(request, user, program_id, flash=flash)


def _field_of(exc: Exception) -> str:
    """Which form field an error from the program or disclosure rules is about ("" for none)."""
    if isinstance(exc, SupportContactError):
        return "help_contact"
    if isinstance(exc, InvalidPhoneNumber):
        return "senders"
    if isinstance(exc, quiet_hours.QuietHoursError):
        return "quiet_hours"
    if isinstance(exc, signup.SignupError):
        return "disclosure"
    if isinstance(exc, caps.CapSettingError):
        return "cap"
    return ""


@router.post("/dashboard/programs/{program_id}")
def save_program(
    request: Request,
    user: CurrentUser,
    program_id: RowId,
    help_contact: Annotated[str, Form()] = "",
    help_text: Annotated[str, Form()] = "",
    frequency_text: Annotated[str, Form()] = "",
    senders: Annotated[str, Form()] = "",
    optout_scope: Annotated[str, Form()] = "brand",
    optout_instruction: Annotated[str, Form()] = "every",
    optout_link: Annotated[str, Form()] = "",
    max_segments: Annotated[str, Form()] = "",
    cap_max: Annotated[str, Form()] = "",
    cap_days: Annotated[str, Form()] = "7",
    cap_action: Annotated[str, Form()] = "defer",
    quiet_start: Annotated[str, Form()] = "",
    quiet_end: Annotated[str, Form()] = "",
    disclosure_text: Annotated[str, Form(alias="disclosure")] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    require_csrf(request, csrf)
    container = container_of(request)
    # An unchecked checkbox sends nothing: absent means off.
    form = {"help_contact": help_contact, "help_text": help_text, "frequency_text": frequency_text, "senders": senders,
            "optout_scope": optout_scope, "optout_instruction": optout_instruction, "optout_link": optout_link == "on",
            "max_segments": max_segments, "cap_max": cap_max, "cap_days": cap_days, "cap_action": cap_action,
            "quiet_start": quiet_start, "quiet_end": quiet_end, "disclosure": disclosure_text}  # fmt: skip
    try:
        cap = None
        if cap_max.strip():
            try:
                cap = {"max": int(cap_max), "days": float(cap_days or 7), "action": cap_action}
            except ValueError:
                raise caps.CapSettingError(
                    f"frequency cap: {cap_max!r} per {cap_days!r} days is not a number"
                ) from None
        with container.db.transaction() as conn:
            before = program_repo.get(conn, program_id)
            shown = signup.disclosure_shown(conn, before) if before else ""
            program = program_service.update_program(
                conn,
                program_id,
                default_region=container.settings.default_region,
                help_contact=help_contact,
                help_text=help_text,
                frequency_text=frequency_text,
                sender_numbers=[s for s in re.split(r"[\n,]+", senders) if s.strip()],
                optout_scope=optout_scope,
                optout_instruction=optout_instruction,
                max_segments=int(max_segments) if max_segments.strip() else None,
                frequency_cap=cap,
                optout_link=optout_link == "on",
                quiet_start=quiet_start,
                quiet_end=quiet_end,
            )
            # Only an edited disclosure makes a new version (an empty box: back to the composed default).
            signup.change_disclosure(conn, container.clock, program, disclosure_text, shown=shown)
    except LookupError as exc:
        return _program_page(request, user, program_id, form, 404, {"": str(exc)})
    except ValueError as exc:  # a number that is not one, a cap that cannot work, a circular HELP text, …
        message = str(exc)[:1].upper() + str(exc)[1:]
        return _program_page(request, user, program_id, form, 400, {_field_of(exc): message})
    return RedirectResponse(f"/dashboard/programs/{program_id}?flash=saved", status_code=303)
