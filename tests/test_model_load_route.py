"""``POST /v1/models/{name}/load`` in-process: loads the store's latest now, answers 503 with the
reason for a version that cannot be served (the old one keeps serving), 404 for a model that is
not enabled."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests import model_versions as mv
from tests.payloads import transactions

NAME = "fraud-scorer"


@pytest.fixture(scope="module")
def client(fraud_model: dict) -> Iterator[TestClient]:
    from service.service import DLServe

    with TestClient(DLServe.to_asgi()) as test_client:
        yield test_client


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
