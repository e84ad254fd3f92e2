"""One real request on every declared route, V2 and batch jobs included, each answer checked:
what a built Bento (tests/test_bento.py) and the container image (tests/test_container.py)
must both answer."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd

from harness.http_checks import batch_job_answer
from harness.images import b64, encode, load_test_images
from harness.payloads import transactions
from service import registry
from service.areas import fraud

Check = Callable[[dict[str, Any]], bool]


def _probability(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def route_requests() -> dict[str, tuple[dict[str, Any], Check]]:
    """Per route: the request (httpx keyword arguments) and a check of its JSON answer."""
    pixels, _ = load_test_images(2)
    image = encode(pixels[0])
    return {
        "/v1/fraud/score": (
            {"json": {"transactions": transactions(2)}},
            lambda a: [_probability(r["fraud_probability"]) for r in a["results"]] == [True] * 2,
        ),
        "/v1/images/classify": (
            {"files": {"image": ("a.png", image)}},
            lambda a: isinstance(a["label"], str) and 0 <= a["class_id"] < 10,
        ),
        "/v1/images/classify_batch": (
            {"json": {"images": [b64(image)]}},
            lambda a: len(a["results"]) == 1 and isinstance(a["results"][0]["label"], str),
        ),
        "/v1/sentiment": (
            {"json": {"texts": ["A fine film."]}},
            lambda a: len(a["results"]) == 1 and _probability(a["results"][0]["probability"]),
        ),
        "/v1/completions": (
            {"json": {"prompt": "A", "max_tokens": 3}},
            lambda a: a["object"] == "text_completion" and a["usage"]["completion_tokens"] == 3,
        ),
        "/v1/embeddings": (
            {"json": {"model": "text-embedder", "input": ["A fine film.", "Dull."]}},
            lambda a: (
                [d["index"] for d in a["data"]] == [0, 1]
                and all(
                    math.isclose(math.hypot(*d["embedding"]), 1.0, rel_tol=1e-5) for d in a["data"]
                )
                and a["usage"]["prompt_tokens"] == 10
            ),
        ),
        "/v1/images/generate": (
            {"json": {"label": "Bag", "seed": 1}},
            lambda a: len(a["images"]) == 1 and isinstance(a["images"][0], str),
        ),
    }


def check_every_route(url: str, timeout: float = 60) -> None:
    """Every declared route, V2 infer, the model list and a batch job answer as they should."""
    requests = route_requests()
    routes = {
        endpoint.route for area in registry.all_areas().values() for endpoint in area.endpoints
    }
    assert set(requests) == routes  # a new route must be added here
    answers = {}
    for route, (request, check) in requests.items():
        response = httpx.post(url + route, timeout=timeout, **request)
        assert response.status_code == 200, (route, response.text[:500])
        answers[route] = response.json()
        assert check(answers[route]), (route, response.text[:500])
    models = httpx.get(url + "/v1/models", timeout=timeout).json()["models"]
    assert {m["status"] for m in models} == {"ready"}
    _check_v2_infer(url, answers["/v1/fraud/score"], timeout)
    _check_batch_job(url, timeout)


def _check_v2_infer(url: str, named: dict[str, Any], timeout: float) -> None:
    """The fraud scorer through the Open Inference Protocol gives the named route's numbers."""
    rows = [fraud.Transaction(**row) for row in transactions(2)]
    inputs = [
        {
            "name": name,
            "shape": list(values.shape),
            "datatype": {"float32": "FP32", "int64": "INT64"}[values.dtype.name],
            "data": values.ravel().tolist(),
        }
        for name, values in fraud.to_arrays(rows).items()
    ]
    response = httpx.post(
        url + "/v2/models/fraud-scorer/infer", json={"inputs": inputs}, timeout=timeout
    )
    assert response.status_code == 200, response.text[:500]
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    expected = [r["fraud_probability"] for r in named["results"]]
    assert len(outputs["fraud_probability"]) == len(expected)
    for got, wanted in zip(outputs["fraud_probability"], expected, strict=True):
        assert math.isclose(got, wanted, rel_tol=1e-5), (got, wanted)


def _check_batch_job(url: str, timeout: float) -> None:
    submitted = httpx.post(
        url + "/v1/batch/jobs/submit",
        files={"file": ("rows.jsonl", "\n".join(json.dumps(r) for r in transactions(3)))},
        data={"model": "fraud"},
        timeout=timeout,
    )
    assert submitted.status_code == 200 and "task_id" in submitted.json(), submitted.text[:500]
    answer = batch_job_answer(url, submitted.json()["task_id"])
    assert answer.status_code == 200, answer.text[:500]
    summary = answer.json()
    assert (summary["rows"], summary["rejected"]) == (3, 0), summary
    scores = httpx.get(url + summary["files"]["scores"], timeout=timeout)
    assert scores.status_code == 200
    probabilities = pd.read_parquet(io.BytesIO(scores.content))["fraud_probability"]
    assert len(probabilities) == 3 and all(map(_probability, probabilities.tolist()))
