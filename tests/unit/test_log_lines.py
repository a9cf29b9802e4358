"""logs.JsonLines writes what python-json-logger's formatter (configured as optline configured it before)
wrote for the same records: the same keys in the same order, the same values."""

from __future__ import annotations

import enum
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from optline.logs import JsonLines


class Colour(enum.Enum):
    RED = "red"


def _reference() -> logging.Formatter:
    formatter = JsonFormatter(
        "{message}{name}{levelname}{request_id}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        json_ensure_ascii=False,
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )
    formatter.converter = time.gmtime
    return formatter


def _record(extra: dict[str, Any], *, exc: bool = False, stack: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad")
        except ValueError:
            exc_info = sys.exc_info()
    sinfo = "Stack (most recent call last):\n  here" if stack else None
    logger = logging.getLogger("optline.test")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "%s é %d", ("x", 3), exc_info, None, extra, sinfo
    )


@pytest.mark.parametrize(
    ("extra", "exc", "stack"),
    [
        ({"request_id": "r1"}, False, False),
        ({"request_id": None, "method": "POST", "status": 200, "duration_ms": 1.5}, False, False),
        (
            {"request_id": "r2", "color_message": "\x1b[1mx", "at": datetime(2026, 1, 2, tzinfo=UTC)},
            False,
            False,
        ),
        ({"request_id": "r3", "colour": Colour.RED, "ids": [1, 2], "nested": {"a": None}}, True, False),
        ({"request_id": "r4", "error": ValueError("v")}, False, True),
    ],
)
def test_the_same_line_as_python_json_logger(extra: dict[str, Any], exc: bool, stack: bool) -> None:
    ours = JsonLines().format(_record(extra, exc=exc, stack=stack))
    theirs = _reference().format(_record(extra, exc=exc, stack=stack))
    # The records were made a moment apart: their times differ, and nothing else may.
    assert ours.rsplit('"time": ', 1)[0] == theirs.rsplit('"time": ', 1)[0]
    assert ours.rsplit('"time": ', 1)[1][:11] == theirs.rsplit('"time": ', 1)[1][:11]


def test_without_a_request_id_filter_the_id_is_null() -> None:
    record = logging.getLogger("optline.test").makeRecord(
        "optline.test", logging.INFO, __file__, 1, "plain", (), None
    )
    assert '"request_id": null' in JsonLines().format(record)
