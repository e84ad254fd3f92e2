"""Errors over real HTTP: one shape for every error on dlserve's routes, whoever answers it
(dlserve, BentoML, Starlette), matching ``/docs.json``; no library version anywhere; rejected
requests counted under the model they name."""

from __future__ import annotations

from typing import Any

import bentoml
import httpx
import jsonschema
import pydantic
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from service.areas import sentiment

pytestmark = pytest.mark.http
JSON = {"content-type": "application/json"}

# case id -> (method, path, headers, body, status)
ERRORS = {
    "unknown path": ("GET", "/v1/nowhere", {}, b"", 404),
    "method not allowed": ("PUT", "/v1/fraud/score", {}, b"", 405),
    "GET on a POST route": ("GET", "/v1/sentiment", {}, b"", 405),
    "pickle body": (
        "POST",
        "/v1/fraud/score",
        {"content-type": "application/vnd.bentoml+pickle"},
        b"x",
        415,
    ),
    "invalid JSON": ("POST", "/v1/fraud/score", JSON, b"{", 400),
    "validation": ("POST", "/v1/sentiment", JSON, b'{"texts": []}', 400),
    "unknown task": ("GET", "/v1/batch/jobs/status?task_id=nope", {}, b"", 404),
    "task without id": ("GET", "/v1/batch/jobs/get", {}, b"", 400),
    "unknown job file": ("GET", "/v1/batch/jobs/0123/scores", {}, b"", 404),
    "k out of range": (
        "POST",
        "/v1/images/classify_batch?k=99",
        JSON,
        b'{"images": ["aGk="]}',
        400,
    ),
    "undecodable image": ("POST", "/v1/images/classify_batch", JSON, b'{"images": ["aGk="]}', 400),
}


@pytest.fixture(scope="module")
def document(server: LocalServer) -> dict[str, Any]:
    return httpx.get(server.url + "/docs.json", timeout=30).json()


def _error_schema(document: dict[str, Any]) -> dict[str, Any]:
    return {**document["components"]["schemas"]["Error"], "components": document["components"]}


def _versions() -> list[str]:
    return [bentoml.__version__, pydantic.VERSION, "errors.pydantic.dev"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"), ERRORS.values(), ids=ERRORS
)
def test_every_error_has_the_documented_shape_and_no_version(
    server: LocalServer,
    document: dict[str, Any],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    response = httpx.request(method, server.url + path, headers=headers, content=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    jsonschema.validate(response.json(), _error_schema(document))
    exposed = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    assert not [version for version in _versions() if version in exposed], exposed


def test_the_document_declares_the_error_shape_on_every_operation(document: dict) -> None:
    detail = document["components"]["schemas"]["Error"]["properties"]["detail"]
    assert detail["type"] == "array"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            # the Open Inference Protocol's readiness: 503 carries the 200's {"ready"} body
            readiness = path.startswith("/v2") and path.endswith("/ready")
            responses = operation["responses"]
            errors = [
                status
                for status in responses
                if status[0] in "45" and not (readiness and status == "503")
            ]
            assert "default" in responses, (method, path)
            for status in errors:  # listed by status (the rollout routes'): the same shape
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    completions = document["paths"]["/v1/completions"]["post"]["responses"]["default"]
    assert "message" in str(completions)  # OpenAI's shape, not dlserve's
    assert not [version for version in _versions() if version in str(document)]


def test_a_task_submission_matches_its_documented_answer(
    server: LocalServer, document: dict
) -> None:
    files = {"file": ("rows.csv", b"amount\n1\n", "text/csv")}
    response = httpx.post(server.url + "/v1/batch/jobs/submit", files=files, timeout=30)
    schema = document["paths"]["/v1/batch/jobs/submit"]["post"]["responses"]["200"]
    ref = schema["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    submitted = {**document["components"]["schemas"][ref], "components": document["components"]}
    jsonschema.validate(response.json(), submitted)
    status = httpx.get(
        server.url + "/v1/batch/jobs/status", params={"task_id": response.json()["task_id"]}
    )
    statuses = document["components"]["schemas"]["TaskStatusResponse"]
    jsonschema.validate(status.json(), statuses)


@pytest.mark.parametrize("named", ["rnn", "transformer", None])
def test_a_rejected_sentiment_request_counts_under_the_model_it_names(
    server: LocalServer, sentiment_models: dict[str, dict], named: str | None
) -> None:
    accuracy = {k: m["headline_metrics"]["test_accuracy"] for k, m in sentiment_models.items()}
    default = max(sentiment.STORE_NAMES, key=lambda kind: accuracy[kind])
    model = sentiment.STORE_NAMES[named or default]
    others = [name for name in sentiment.STORE_NAMES.values() if name != model]
    before = [
        metric_value(server, "dlserve_predictions_total", model=name, outcome="rejected")
        for name in (model, *others)
    ]
    body = {"texts": [], **({"model": named} if named else {})}
    assert httpx.post(server.url + sentiment.ROUTE, json=body, timeout=30).status_code == 400
    after = [
        metric_value(server, "dlserve_predictions_total", model=name, outcome="rejected")
        for name in (model, *others)
    ]
    assert after == [before[0] + 1, *before[1:]]
