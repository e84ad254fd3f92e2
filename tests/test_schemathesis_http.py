"""Schemathesis against the running service (smoke models): every operation of ``/docs.json``
(BentoML's routes, and those mounted beside them: ``/v1/models``, the load route, job
downloads, every ``/v2`` route) gets valid and invalid requests (fixed seed); no answer is a
5xx, every answer matches the document and invalid data is refused. Without keys on the
open server; on a server with API keys, with its key (every operation reached) and without
(every operation but the open paths answers 401)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from harness.local_server import LocalServer
from harness.schema_fuzz import fuzz_operation, load_schema, operations
from service.auth import open_paths
from service.config import Settings
from service.service import dlserve_openapi

pytestmark = pytest.mark.http
EXAMPLES = 100  # per operation, valid and invalid mixed
KEYED_EXAMPLES = 25  # per operation on the keyed server, with its key and without
SEED = 0
OPEN_PATHS = open_paths(Settings.from_env())  # what the servers below leave open
KEY = "schemathesis-key-0123456789abcdef"
DOCUMENT = dlserve_openapi()  # built in-process: what the served one must list too
LABELS = [f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item]
# Mounted beside BentoML's routes: each must be in the document (issue 20, row 15).
MOUNTED = [
    "GET /v1/models",
    "POST /v1/models/{name}/load",
    "POST /v1/models/{name}/rollout",
    "POST /v1/models/{name}/rollout/{action}",
    "GET /v1/batch/jobs/{job_id}/{name}",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/ready",
    "POST /v2/models/{name}/infer",
    "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/versions/{version}/ready",
    "POST /v2/models/{name}/versions/{version}/infer",
]


@pytest.fixture(scope="module")
def served(server: LocalServer) -> dict[str, schemathesis.APIOperation]:
    return operations(load_schema(server.url))


@pytest.fixture(scope="module")
def keyed(stored_models: dict[str, dict]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A server with an API key: its operations, to call with the key and without."""
    with LocalServer({"DLSERVE_API_KEYS": KEY}) as running:
        url = running.wait("/readyz").url
        yield operations(load_schema(url, KEY)), operations(load_schema(url))


def test_the_served_document_lists_every_operation(served: dict[str, Any]) -> None:
    assert sorted(served) == sorted(LABELS) and set(MOUNTED) <= set(LABELS)
    assert "securitySchemes" not in DOCUMENT["components"]  # no keys set: none needed


def test_with_keys_the_document_declares_the_bearer_scheme(
    keyed: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    with_key, _ = keyed
    assert sorted(with_key) == sorted(LABELS)
    document = next(iter(with_key.values())).schema.raw_schema
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for operation in item.values():
            assert operation["security"] == ([] if path in OPEN_PATHS else [{"bearer": []}])


def _fuzz(operation: Any, examples: int) -> tuple[Counter[str], list[dict[str, Any]]]:
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    fuzz_operation(operation, SEED, examples, counts, failures)
    return counts, failures


@pytest.mark.parametrize("label", LABELS)
def test_every_operation_answers_as_documented(served: dict[str, Any], label: str) -> None:
    counts, failures = _fuzz(served[label], EXAMPLES)
    assert sum(counts.values()) > 0 and counts["5xx"] == 0, counts
    assert failures == [], failures


@pytest.mark.parametrize("label", LABELS)
def test_with_keys_every_operation_is_reached_with_the_key_and_refused_without(
    keyed: tuple[dict[str, Any], dict[str, Any]], label: str
) -> None:
    with_key, without_key = keyed
    counts, failures = _fuzz(with_key[label], KEYED_EXAMPLES)
    assert counts["5xx"] == 0 and failures == [], (counts, failures)
    # requests that leave the key out (schemathesis' negative cases) are the only 401s
    assert sum(counts.values()) > counts["401"], counts
    counts, failures = _fuzz(without_key[label], KEYED_EXAMPLES)
    assert failures == [], failures
    path = label.split(" ", 1)[1]
    if path in OPEN_PATHS:
        assert counts["401"] == 0, counts
    else:
        assert counts["401"] == sum(counts.values()) > 0, counts
