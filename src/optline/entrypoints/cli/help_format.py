"""How ``optline … --help`` names its parameters.

Typer 0.29 (``typer/core.py``) prints a type placeholder beside every flag — ``--fix / --no-fix <bool>``,
``--help <bool>`` — although a flag takes no value, and writes a required argument in braces in the usage
line — ``optline contacts import [OPTIONS] {file}`` — which reads like a literal to type. Typer offers no
setting for either, and both are drawn by methods every Typer parameter shares, so they are overridden once
here, on Typer's own classes, before the command tree is built:

- a flag shows no type (its name says what it does);
- an argument is named as Unix manuals and Click name it: ``FILE``, ``[FILE]``, ``FILE...``.

``tests/e2e/test_cli_help.py`` runs every command's ``--help`` and fails on a placeholder, so a Typer
release that renames these methods is noticed at once.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

_typer_type = TyperOption.display_type_rich


def _option_type(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag and self.metavar is None else _typer_type(self, ctx)


def _argument_name(self: TyperArgument) -> str:
    return self.metavar or (self.name or "").upper()


def _argument_usage(self: TyperArgument, ctx: Any) -> list[str]:
    name = self.display_name_raw
    if self.nargs != 1:
        name += "..."
    return [name if self.required else f"[{name}]"]


def install() -> None:
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument.get_usage_pieces = _argument_usage  # type: ignore[method-assign]
