"""A regression guard on the shared real-data files (skipped where they are not present). The figures
themselves, beside the Twilio-rule baseline, come from ``python -m bench.classifier``."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.classifier import DATA, load_ham, load_replies, optline_rule, scores

pytestmark = pytest.mark.skipif(not (Path(DATA) / "replies-dev.tsv").exists(), reason=f"no data in {DATA}")


def test_replies_precision_and_recall() -> None:
    rows = load_replies(DATA / "replies-dev.tsv")
    for intent in ("optout", "optin", "help"):
        precision, recall = scores(optline_rule, rows, intent)
        assert precision >= 0.95 and recall >= 0.9, (intent, precision, recall)


def test_ordinary_sms_are_rarely_opt_outs() -> None:
    ham = load_ham(DATA / "sms-ham-dev.txt")
    false_positives = [t for t in ham if optline_rule(t) == "optout"]
    assert len(false_positives) / len(ham) <= 0.005, false_positives
