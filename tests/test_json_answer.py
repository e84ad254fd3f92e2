"""``JSONAnswer`` renders the bytes Starlette's ``JSONResponse`` renders for the routes' answers,
and also numpy numbers (as the V2 routes do), with the same media type."""

from __future__ import annotations

import numpy as np
from starlette.responses import JSONResponse

from service.json_answer import JSONAnswer


def test_the_same_bytes_as_starlette_s_json_response() -> None:
    scores = np.random.default_rng(0).random(5).astype(np.float32)
    answer = {
        "model": {"name": "fraud-scorer", "version": "abc123"},
        "decision_threshold": 0.06,
        "results": [
            {"fraud_probability": p, "anomaly_score": p * 3, "is_fraud": p >= 0.06}
            for p in scores.tolist()
        ],
        "label": "Ankle boot — ünïcode",
        "count": 5,
        "none": None,
    }
    ours, theirs = JSONAnswer(answer), JSONResponse(answer)
    assert ours.body == theirs.body
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.headers["content-length"] == theirs.headers["content-length"]


def test_numpy_numbers_are_written_as_numbers_and_non_finite_ones_as_null() -> None:
    answer = {"a": np.float32(0.5), "b": np.int64(3), "c": np.bool_(True), "d": float("nan")}
    assert JSONAnswer(answer).body == b'{"a":0.5,"b":3,"c":true,"d":null}'
