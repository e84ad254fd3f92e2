"""The service's ASGI app in-process: routes, validation and metrics without a server."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from core.model_store import load_model
from harness.images import encode, load_test_images
from harness.payloads import transactions
from service.areas.fraud import FraudScoreResponse, Transaction, to_arrays
from tests import model_versions as mv


@pytest.fixture(scope="module")
def client(fraud_model: dict) -> Iterator[TestClient]:
    from service.service import DLServe

    with TestClient(DLServe.to_asgi()) as test_client:
        yield test_client


def test_scores_come_back_in_input_order_and_match_the_stored_model(
    client: TestClient, fraud_model: dict
) -> None:
    rows = transactions(40)
    response = client.post("/v1/fraud/score", json={"transactions": rows})
    assert response.status_code == 200
    body = FraudScoreResponse.model_validate(response.json())
    assert body.model.name == "fraud-scorer" and body.model.version == fraud_model["version"]
    expected = load_model("fraud-scorer:latest", "cpu").run(
        to_arrays([Transaction(**row) for row in rows])
    )
    got = np.array([r.fraud_probability for r in body.results])
    np.testing.assert_allclose(got, expected["fraud_probability"], atol=1e-6)
    threshold = fraud_model["decision"]["threshold"]
    assert [r.is_fraud for r in body.results] == [p >= threshold for p in got.tolist()]


def test_a_schema_400_logs_one_short_line_without_a_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.post("/v1/fraud/score", json={"transactions": [{"amount": 1}]})
    assert response.status_code == 400, response.text
    server = [r for r in caplog.records if not r.name.startswith("httpx")]  # not the client's
    logged = [r for r in server if "/v1/fraud/score" in r.getMessage()]
    assert len(logged) <= 1, [r.getMessage() for r in logged]
    assert all(r.levelno <= logging.WARNING for r in server), caplog.text
    assert not any(r.exc_info for r in server), "a traceback was logged"
    assert all(len(r.getMessage()) < 200 for r in logged)


def test_models_route_lists_the_loaded_model(client: TestClient, fraud_model: dict) -> None:
    models = {entry["name"]: entry for entry in client.get("/v1/models").json()["models"]}
    assert {"fraud-scorer", "image-classifier"} <= set(models)
    entry = models["fraud-scorer"]
    assert entry["status"] == "ready" and entry["provider"] == "cpu"
    assert entry["sha256"] == fraud_model["sha256"]
    assert entry["route"] == "/v1/fraud/score"
    schema = entry["request_schema"]
    assert schema["properties"]["transactions"]["maxItems"] == 1000
    assert schema["$defs"]["Transaction"]["properties"]["hour"]["maximum"] == 23
    assert entry["metrics"]["pr_auc"] == fraud_model["headline_metrics"]["pr_auc"]


def test_models_route_describes_every_route_of_a_model(client: TestClient) -> None:
    models = {entry["name"]: entry for entry in client.get("/v1/models").json()["models"]}
    routes = {route["route"]: route for route in models["image-classifier"]["routes"]}
    assert set(routes) == {
        "/v1/images/classify",
        "/v1/images/classify_batch",
        "/v1/batch/jobs/submit",
    }
    upload = routes["/v1/images/classify"]
    assert upload["content_type"] == "multipart/form-data"
    assert upload["request_schema"]["properties"]["image"]["format"] == "binary"
    assert models["image-classifier"]["request_schema"] == upload["request_schema"]
    batch = routes["/v1/images/classify_batch"]
    assert batch["content_type"] == "application/json"
    assert batch["request_schema"]["properties"]["images"]["maxItems"] == 256
    job = routes["/v1/batch/jobs/submit"]
    assert (
        job["batch_model"] == "image-classifier" and "file" in job["request_schema"]["properties"]
    )
    sentiment = {route["route"] for route in models["sentiment-rnn"]["routes"]}
    assert "/v1/sentiment" in sentiment


def test_an_upload_is_classified_without_a_temporary_file(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_temporary_file() -> str:
        raise AssertionError("the upload was written to a temporary file")

    # BentoML writes a Path parameter's upload under this directory
    monkeypatch.setattr("bentoml._internal.context.request_temp_dir", no_temporary_file)
    png = encode(load_test_images(1)[0][0])
    response = client.post("/v1/images/classify?k=2", files={"image": ("item.png", png)})
    assert response.status_code == 200, response.text
    assert len(response.json()["top_k"]) == 2


# POST /v1/models/{name}/load (here: one in-process service per test session, as BentoML's
# request metrics can be registered only once in a process)
NAME = "fraud-scorer"


def _answering_version(client: TestClient) -> str:
    response = client.post("/v1/fraud/score", json={"transactions": transactions(1)})
    assert response.status_code == 200
    return response.json()["model"]["version"]


def test_the_load_route_serves_a_new_version_at_once_or_says_why_not(
    client: TestClient, fraud_model: dict
) -> None:
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    source = store / NAME / fraud_model["version"]
    added = []
    try:
        added.append(mv.new_version(store, NAME, source=source))
        response = client.post(f"/v1/models/{NAME}/load")
        assert response.status_code == 200, response.text
        assert response.json()["version"] == added[-1]
        assert response.json()["last_load"]["outcome"] == "ok"
        assert _answering_version(client) == added[-1]

        added.append(mv.new_version(store, NAME, mv.break_warm_up, source=source))
        refused = client.post(f"/v1/models/{NAME}/load")
        assert refused.status_code == 503
        assert "warm-up inference failed" in refused.json()["error"]
        assert added[-1] in refused.json()["error"]
        assert _answering_version(client) == added[0]  # the good one keeps serving
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}[NAME]
        assert listed["version"] == added[0] and listed["last_load"]["version"] == added[-1]
    finally:
        for version in reversed(added):
            mv.remove_version(store, NAME, version)
        client.post(f"/v1/models/{NAME}/load")  # back to the session's version


def test_the_load_route_of_a_model_not_enabled_is_404(client: TestClient) -> None:
    response = client.post("/v1/models/no-such-model/load")
    assert response.status_code == 404
    assert response.json()["detail"][0]["loc"] == ["path", "name"]
    assert "fraud-scorer" in response.json()["detail"][0]["msg"]
