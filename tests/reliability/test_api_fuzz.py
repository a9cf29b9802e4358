"""Schemathesis against ``/openapi.json`` (issue 13, API): for every operation, requests generated from the
schema (valid and invalid: 64-bit overflows, NUL characters, over-long strings, wrong types), sent with an
API key to the ASGI app in-process, on both engines. Every answer must be no 5xx, a status code the schema
documents, a body that matches the documented schema, and every timestamp in it must carry its zone.

``API_FUZZ_EXAMPLES`` (environment, default 25) bounds the examples per operation.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from optline.adapters.db import api_keys
from optline.bootstrap import Container
from optline.entrypoints.api.app import create_app
from tests.support import web

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]
# An ISO 8601 date-time without Z or ±hh:mm at its end: a time nobody can place (domain/dates.py).
_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def naive_timestamps(value: Any, where: str = "$") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in naive_timestamps(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in naive_timestamps(v, f"{where}[{i}]")]
    return [f"{where}={value}"] if isinstance(value, str) and _NAIVE.match(value) else []


@pytest.fixture
def api(container: Container) -> Iterator[tuple[Any, dict[str, str]]]:
    """The schema loaded from the running app, and the headers of an API key."""
    prog = web.program(container)  # "deals": so generated names sometimes meet a real program
    web.subscriber(container, prog)
    with container.db.transaction() as conn:
        key = api_keys.create(conn, "fuzz", container.clock.now())
    app = create_app(container)
    yield schemathesis.openapi.from_asgi("/openapi.json", app), {"authorization": f"Bearer {key}"}


def test_every_api_operation_survives_generated_requests(api: tuple[Any, dict[str, str]]) -> None:
    schema, headers = api
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    api_operations = [op for op in operations if op.path.startswith("/v1/")]
    assert len(api_operations) >= 15  # the whole /v1 API, not an empty schema

    for operation in api_operations:

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)
            if response.status_code < 300 and "json" in response.headers.get("content-type", ""):
                naive = naive_timestamps(response.json())
                assert not naive, f"timestamps without a zone: {naive[:3]}"

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report of every operation's failures
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    print(f"\nAPI fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures)
