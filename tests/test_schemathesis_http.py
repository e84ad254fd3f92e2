"""Schemathesis against the running service (smoke models): every operation of ``/docs.json``
gets valid and invalid requests (fixed seed, 100 each: about a minute on 2 cores); no
answer is a 5xx, every answer matches the document and invalid data is refused."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis

from service.service import dlserve_openapi
from tests.local_server import LocalServer
from tests.schema_fuzz import fuzz_operation, load_schema, operations

pytestmark = pytest.mark.http
EXAMPLES = 100  # per operation, valid and invalid mixed
SEED = 0
# Every operation of the document built in-process (what the served one must list too).
LABELS = [
    f"{method.upper()} {path}"
    for path, item in dlserve_openapi()["paths"].items()
    for method in item
]


@pytest.fixture(scope="module")
def served(server: LocalServer) -> dict[str, schemathesis.APIOperation]:
    return operations(load_schema(server.url))


def test_the_served_document_lists_every_operation(served: dict[str, Any]) -> None:
    assert sorted(served) == sorted(LABELS) and len(LABELS) >= 16


@pytest.mark.parametrize("label", LABELS)
def test_every_operation_answers_as_documented(served: dict[str, Any], label: str) -> None:
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    fuzz_operation(served[label], SEED, EXAMPLES, counts, failures)
    assert sum(counts.values()) > 0 and counts["5xx"] == 0, counts
    assert failures == [], failures
