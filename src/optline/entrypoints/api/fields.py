"""The value types of the /v1 API's requests and responses: bounds the database can keep, stated in the
schema (so clients and the schemathesis suite see them) and enforced by pydantic before a route runs.

- ids are 64-bit (BIGINT): a larger one is a 422, not an OverflowError or a DataError (500);
- text has a length limit and no NUL character (PostgreSQL cannot store NUL in text or JSON);
- free-form JSON objects (attributes, evidence, filters) are checked for NUL in keys and values, and depth;
- times: requests must carry a zone (a time nobody can place is refused); responses always carry one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, Field

from optline.adapters.db.tables import MAX_ID

NO_NUL = r"^[^\x00]*$"
MAX_DEPTH = 20


def text(max_length: int, min_length: int = 0, **kw: Any) -> Any:
    """``Annotated[str, text(200)]``: a string of at most ``max_length`` characters, no NUL."""
    return Field(min_length=min_length, max_length=max_length, pattern=NO_NUL, **kw)


def _clean_json(value: Any, where: str = "", depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or 'value'}: nested more than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where or 'value'}: contains a NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_json(key, f"{where}.{key!r}" if where else repr(key), depth + 1)
            _clean_json(item, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _clean_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ID:
        raise ValueError(f"{where or 'value'}: integer out of the 64-bit range")
    return value


# A JSON object given by the client and stored as it is (contact attributes, consent evidence, filters).
JsonObject = Annotated[dict[str, Any], AfterValidator(_clean_json)]
# Times the client gives: with their zone (ISO 8601 with Z or an offset).
GivenTime = AwareDatetime


def _as_utc(value: datetime) -> datetime:
    # The database keeps UTC; SQLite hands it back without its zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# Times in responses: always with a zone.
Timestamp = Annotated[datetime, AfterValidator(_as_utc)]

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
NamePath = Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL)]
PhonePath = Annotated[str, Path(min_length=1, max_length=40, pattern=NO_NUL)]
NameQuery = Annotated[str | None, Query(max_length=100, pattern=NO_NUL)]
