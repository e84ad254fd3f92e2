"""Schemathesis against the running service (smoke models): every operation of ``/docs.json``
gets valid and invalid requests (fixed seed, a few examples each: a few minutes on 2 cores);
no answer is a 5xx, every answer matches the document and invalid data is refused."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.local_server import LocalServer
from tests.schema_fuzz import checks_for, load_schema

pytestmark = pytest.mark.http
EXAMPLES = 25  # per operation and generation mode
OPERATIONS = 16  # every route of the document, probes and batch job task routes included


@pytest.fixture(scope="module")
def api_schema(server: LocalServer) -> schemathesis.BaseSchema:
    return load_schema(server.url, EXAMPLES)


def test_the_document_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    assert len([operation.ok() for operation in api_schema.get_all_operations()]) == OPERATIONS


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=checks_for(case.operation))
