"""Arguments the command-line tests share."""

from __future__ import annotations

# `optline programs create` for the program most CLI tests start from, with every required option.
CREATE_DEALS = (
    "programs", "create", "deals", "--brand", "Acme", "--sender", "+14155550100",
    "--help-contact", "help@acme.example",
)  # fmt: skip
