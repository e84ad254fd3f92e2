"""Over real HTTP against ``bentoml serve``: answers, every bad-input case, probes, metrics."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from harness.http_checks import assert_names_field_and_rule, metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"


def _post(server: LocalServer, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(
            server.url + ROUTE,
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
            **kwargs,
        )
    return httpx.post(server.url + ROUTE, json=body, timeout=30, **kwargs)


def test_probes_say_live_and_ready(server: LocalServer) -> None:
    assert httpx.get(server.url + "/livez").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_a_good_request_is_scored_and_counted(server: LocalServer, fraud_model: dict) -> None:
    before = metric_value(server, "dlserve_predictions_total", model="fraud-scorer", outcome="ok")
    response = _post(server, {"transactions": transactions(100)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "fraud-scorer", "version": fraud_model["version"]}
    assert len(body["results"]) == 100
    assert set(body["results"][0]) == {"fraud_probability", "anomaly_score", "is_fraud"}
    after = metric_value(server, "dlserve_predictions_total", model="fraud-scorer", outcome="ok")
    assert after == before + 1
    assert (
        metric_value(
            server,
            "dlserve_model_info",
            model="fraud-scorer",
            version=fraud_model["version"],
            provider="cpu",
        )
        == 1
    )


def _with(field: str, value: Any) -> dict:
    row = copy.deepcopy(transactions(1)[0])
    if value is _MISSING:
        del row[field]
    else:
        row[field] = value
    return {"transactions": [row]}


_MISSING = object()

BAD_ROWS = [
    (
        "negative amount",
        _with("amount", -5.0),
        ["transactions", 0, "amount"],
        "greater than or equal to 0",
    ),
    (
        "huge amount",
        _with("amount", 2e6),
        ["transactions", 0, "amount"],
        "less than or equal to 1000000",
    ),
    (
        "unknown category",
        _with("merchant_category", "casino"),
        ["transactions", 0, "merchant_category"],
        "'grocery'",
    ),
    ("hour 24", _with("hour", 24), ["transactions", 0, "hour"], "less than or equal to 23"),
    (
        "missing field",
        _with("account_age_days", _MISSING),
        ["transactions", 0, "account_age_days"],
        "required",
    ),
    ("extra field", _with("ssn", "123"), ["transactions", 0, "ssn"], "not permitted"),
    ("text amount", _with("amount", "lots"), ["transactions", 0, "amount"], "valid number"),
    ("no rows", {"transactions": []}, ["transactions"], "at least 1"),
    ("no body field", {}, ["transactions"], "required"),
]


@pytest.mark.parametrize(("case", "body", "loc", "message"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_rows_get_400_naming_field_and_rule(
    server: LocalServer, case: str, body: dict, loc: list, message: str
) -> None:
    assert_names_field_and_rule(_post(server, body), loc, message)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(server: LocalServer, literal: str) -> None:
    row = transactions(1)[0]
    raw = httpx.Request("POST", "/", json={"transactions": [row]}).content.decode()
    raw = raw.replace(f'"amount":{row["amount"]}', f'"amount":{literal}')
    assert literal in raw
    response = _post(server, raw)
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["transactions", 0, "amount"]


def test_more_than_1000_rows_is_400(server: LocalServer) -> None:
    response = _post(server, {"transactions": transactions(1) * 1001})
    assert response.status_code == 400
    assert "at most 1000" in response.json()["detail"][0]["msg"]


def test_hour_count_above_day_count_is_400(server: LocalServer) -> None:
    body = _with("txn_count_1h", 50)
    body["transactions"][0]["txn_count_24h"] = 3
    response = _post(server, body)
    assert response.status_code == 400
    assert "txn_count_24h must be at least txn_count_1h" in response.text


def test_invalid_json_is_400_without_internals(server: LocalServer) -> None:
    response = _post(server, b'{"transactions": [')
    assert response.status_code == 400
    assert "Traceback" not in response.text and "/work" not in response.text


def test_oversized_body_is_413_and_counted_as_rejected(server: LocalServer) -> None:
    before = metric_value(
        server, "dlserve_predictions_total", model="fraud-scorer", outcome="rejected"
    )
    response = _post(server, b"[" + b" " * (9 * 1024 * 1024) + b"]")
    assert response.status_code == 413
    assert response.json()["detail"][0]["type"] == "body_too_large"
    after = metric_value(
        server, "dlserve_predictions_total", model="fraud-scorer", outcome="rejected"
    )
    assert after == before + 1


def test_models_route_over_http(server: LocalServer, fraud_model: dict) -> None:
    models = {m["name"]: m for m in httpx.get(server.url + "/v1/models").json()["models"]}
    fraud = models["fraud-scorer"]
    assert fraud["provider"] == "cpu" and fraud["version"] == fraud_model["version"]
    assert {"image-classifier", "text-embedder"} <= set(models)


def test_openapi_spec_documents_the_route(server: LocalServer) -> None:
    spec = httpx.get(server.url + "/docs.json").json()
    assert ROUTE in spec["paths"]


def test_service_without_a_trained_model_starts_but_is_not_ready(tmp_path) -> None:
    with LocalServer({"BENTOML_HOME": str(tmp_path / "empty-store")}) as empty:
        empty.wait("/livez")
        assert httpx.get(empty.url + "/readyz").status_code == 503
        models = httpx.get(empty.url + "/v1/models").json()["models"]
        assert models[0]["status"] == "unavailable"
        assert "train it first" in models[0]["reason"]
        response = httpx.post(empty.url + ROUTE, json={"transactions": transactions(1)})
        assert response.status_code == 503
        assert "not loaded" in response.json()["error"]
