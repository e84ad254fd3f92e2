"""Over real HTTP against ``bentoml serve``: the hot routes (V2 infer, the fraud and image
routes) are answered on the lean path (``service/lean_path.py``, marked ``x-dlserve-path:
lean``), every other route by BentoML's stack, and BentoML's own request metrics count the lean
requests under the same names and labels as before; ``DLSERVE_LEAN_PATH=false`` routes all
through BentoML."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from harness.http_checks import series_sum
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.areas import fraud, images

pytestmark = pytest.mark.http
LEAN = "x-dlserve-path"
FRAUD = "/v1/fraud/score"


def v2_fraud_body() -> dict:
    inputs = fraud.to_arrays([fraud.Transaction(**transactions(1)[0])])
    return {
        "inputs": [
            {
                "name": name,
                "datatype": "FP32" if value.dtype == np.float32 else "INT64",
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
            for name, value in inputs.items()
        ]
    }


def test_hot_routes_are_answered_lean_and_the_others_by_bentoml(server: LocalServer) -> None:
    scored = httpx.post(server.url + FRAUD, json={"transactions": transactions(2)}, timeout=30)
    assert scored.status_code == 200, scored.text
    assert scored.headers.get(LEAN) == "lean"
    assert len(scored.json()["results"]) == 2

    v2 = httpx.post(server.url + "/v2/models/fraud-scorer/infer", json=v2_fraud_body(), timeout=30)
    assert v2.status_code == 200, v2.text
    assert v2.headers.get(LEAN) == "lean"

    png = base64.b64encode(images.sample_image()).decode()
    classified = httpx.post(
        server.url + "/v1/images/classify_batch?k=2", json={"images": [png]}, timeout=30
    )
    assert classified.status_code == 200, classified.text
    assert classified.headers.get(LEAN) == "lean"
    assert len(classified.json()["results"][0]["top_k"]) == 2

    for other in (
        httpx.get(server.url + "/v1/models", timeout=30),
        httpx.get(server.url + "/v2/models/fraud-scorer", timeout=30),
        httpx.get(server.url + FRAUD, timeout=30),  # 405: not a POST, BentoML's router answers
    ):
        assert LEAN not in other.headers, other.request.url


def test_bentoml_request_metrics_count_the_lean_requests(server: LocalServer) -> None:
    ok = {"endpoint": FRAUD, "http_response_code": "200", "runner_name": "dlserve"}
    refused = {**ok, "http_response_code": "400"}
    total = "bentoml_service_request_total"
    durations = "bentoml_service_request_duration_seconds_count"
    before = [series_sum(server, name, **ok) for name in (total, durations)]
    before_refused = series_sum(server, total, **refused)

    for _ in range(3):
        answer = httpx.post(server.url + FRAUD, json={"transactions": transactions(1)}, timeout=30)
        assert answer.headers.get(LEAN) == "lean"
    bad = httpx.post(server.url + FRAUD, json={"transactions": []}, timeout=30)
    assert bad.status_code == 400 and bad.headers.get(LEAN) == "lean"

    assert [series_sum(server, name, **ok) for name in (total, durations)] == [
        value + 3 for value in before
    ]
    assert series_sum(server, total, **refused) == before_refused + 1


def test_the_lean_path_can_be_turned_off(fraud_model: dict) -> None:
    with LocalServer(env={"DLSERVE_LEAN_PATH": "false", "DLSERVE_MODELS": "fraud"}) as off:
        off.wait("/readyz")
        answer = httpx.post(off.url + FRAUD, json={"transactions": transactions(1)}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert LEAN not in answer.headers
        ok = {"endpoint": FRAUD, "http_response_code": "200"}
        assert series_sum(off, "bentoml_service_request_total", **ok) == 1
