"""Schemathesis against a running dlserve's ``/docs.json``: the checks every answer must pass
(no 5xx, status, content type and body as documented, invalid data refused), shared by the CI
test (``tests/test_schemathesis_http.py``) and the long run (``make fuzz``)."""

from __future__ import annotations

import schemathesis
from schemathesis import APIOperation, CheckFunction
from schemathesis.checks import not_a_server_error
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


def load_schema(base_url: str, max_examples: int, seed: int | None = 0) -> schemathesis.BaseSchema:
    """The service's document, generating valid and invalid requests; ``seed=None``: random."""
    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json")
    schema.config.update(base_url=base_url, request_timeout=60)
    schema.config.generation.update(
        modes=["positive", "negative"], max_examples=max_examples, deterministic=seed is not None
    )
    if seed is not None:
        schema.config.seed = seed
    return schema
