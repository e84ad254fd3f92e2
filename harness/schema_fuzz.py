"""Schemathesis against a running dlserve's ``/docs.json``: the checks every answer must pass
(no 5xx, status, content type and body as documented, invalid data refused) and a seeded run
of valid and invalid requests to one operation, shared by the CI test
(``tests/test_schemathesis_http.py``) and the long run (``make fuzz``, ``bench/fuzz.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis import APIOperation, CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._auth import AuthConfig  # not exported; the bearer key's config
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.batch.http import ROUTE

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# A task's submission only stores the request: its input is validated when the task runs, and
# a refusal is then the answer of ``/get`` (a 400), not of ``/submit`` or ``/retry``.
DEFERRED_VALIDATION = {f"POST {ROUTE}/submit", f"POST {ROUTE}/retry"}


def checks_for(operation: APIOperation) -> list[CheckFunction]:
    """The checks of ``operation``'s answers: ``CHECKS``, but invalid data may be accepted
    where validation is deferred."""
    if f"{operation.method.upper()} {operation.path}" in DEFERRED_VALIDATION:
        return [check for check in CHECKS if check is not negative_data_rejection]
    return CHECKS


def load_schema(base_url: str, key: str | None = None) -> schemathesis.BaseSchema:
    """The served document of the service at ``base_url``; ``key``: the API key its bearer
    scheme takes (requests send it, and requests that leave it out must be refused)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json")
    schema.config.update(base_url=base_url, request_timeout=60)
    if key is not None:
        schema.config.auth = AuthConfig(openapi={"bearer": {"bearer": key}})
    return schema


def operations(schema: schemathesis.BaseSchema) -> dict[str, APIOperation]:
    """Every operation of ``schema`` by ``"METHOD /path"``."""
    found = [result.ok() for result in schema.get_all_operations()]
    return {f"{operation.method.upper()} {operation.path}": operation for operation in found}


def fuzz_operation(
    operation: APIOperation,
    seed: int,
    examples: int,
    counts: Counter[str],
    failures: list[dict[str, Any]],
) -> None:
    """Up to ``examples`` valid and invalid requests to ``operation`` (generated from ``seed``);
    add each answer's status class (``401``, refused for its key, apart) to ``counts`` and each
    failed check (operation, status, reason, its detail, the request body) to ``failures``."""
    label = f"{operation.method.upper()} {operation.path}"
    checks = checks_for(operation)
    modes = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]

    @hypothesis_seed(seed)
    @given(case=st.one_of(modes))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Any) -> None:
        response = case.call()
        status = response.status_code
        counts["401" if status == 401 else f"{status // 100}xx"] += 1
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:  # failed checks: recorded, the run goes on
            for failure in group.exceptions:
                reason, *detail = str(failure).strip().splitlines()
                failures.append(
                    {
                        "operation": label,
                        "status": response.status_code,
                        "reason": reason,
                        "detail": "\n".join(detail).strip(),
                        "request": repr(case.body)[:500],
                    }
                )

    send()
