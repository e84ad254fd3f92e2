"""The side-by-side bench's workloads: one request body per protocol, the arrays it becomes,
ONNX Runtime's answer to them in process, and a check of every server's answer against it.

Protocols: ``named`` (dlserve's own routes, also spoken by the plain FastAPI server), ``v2``
(the Open Inference Protocol's JSON tensors: Triton, and dlserve where it has the routes).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bench.wrk import WrkResult, start_wrk
from core.model_store import load_model
from harness.images import encode, load_test_images
from service.areas import fraud, images
from service.batching import Arrays
from training.fraud.simulator import simulate_transactions

V2_TYPES = {np.dtype("float32"): "FP32", np.dtype("int64"): "INT64", np.dtype("uint8"): "UINT8"}


@dataclass(frozen=True)
class Body:
    route: str
    content: bytes
    content_type: str = "application/json"


def drive(url: str, body: Body, connections: int, seconds: int) -> WrkResult:
    """wrk (2 threads) posting ``body`` to its route of the server at ``url``."""
    return start_wrk(
        url + body.route, body.content, connections, seconds, 2, body.content_type
    ).result()


@dataclass(frozen=True)
class Workload:
    """``rows`` inputs per request to ``model``: its bodies per protocol and expected outputs."""

    label: str
    model: str
    rows: int
    named: Body
    v2: Body
    inputs: Arrays
    expected: Arrays


def v2_body(model: str, inputs: Arrays) -> Body:
    """An Open Inference Protocol JSON request holding ``inputs``."""
    tensors = [
        {
            "name": name,
            "datatype": V2_TYPES[value.dtype],
            "shape": list(value.shape),
            "data": value.ravel().tolist(),
        }
        for name, value in inputs.items()
    ]
    return Body(f"/v2/models/{model}/infer", json.dumps({"inputs": tensors}).encode())


def image_upload(png: bytes) -> Body:
    """The upload route's multipart request for one image file, all ten classes (``?k=10``)."""
    upload = httpx.Request("POST", "http://x", files={"image": ("item.png", png)})
    return Body(images.ROUTE + "?k=10", upload.read(), upload.headers["content-type"])


def workloads(fraud_tag: str, image_tag: str) -> list[Workload]:
    """Fraud with 1 and 100 transactions per request, and one PNG image per request."""
    rows = fraud.json_rows(simulate_transactions(200, seed=7))
    made = []
    for size in (1, 100):
        body = json.dumps({"transactions": rows[:size]}).encode()
        inputs = fraud.to_arrays([fraud.Transaction(**row) for row in rows[:size]])
        made.append(
            (
                f"fraud, {size} transaction(s)",
                fraud_tag,
                size,
                Body("/v1/fraud/score", body),
                inputs,
            )
        )
    pixels, _ = load_test_images(1)
    png = encode(pixels[0])
    inputs = images.to_arrays([png], [["image"]], max_pixels=pixels[0].size, stop=threading.Event())
    made.append(("image, 1 PNG", image_tag, 1, image_upload(png), inputs))
    loaded: list[Workload] = []
    for label, tag, size, body, arrays in made:
        model = load_model(tag, "cpu", intra_op_threads=1)
        name = tag.split(":")[0]
        loaded.append(
            Workload(label, name, size, body, v2_body(name, arrays), arrays, model.run(arrays))
        )
    return loaded


def answered(protocol: str, workload: Workload, answer: dict[str, Any]) -> Arrays:
    """The outputs a server's JSON answer holds, comparable with ``workload.expected``."""
    if protocol == "v2":
        return {o["name"]: np.asarray(o["data"]) for o in answer["outputs"]}
    if protocol == "plain":
        return {name: np.asarray(value) for name, value in answer["outputs"].items()}
    if workload.model == fraud.MODEL:
        return {"fraud_probability": np.array([r["fraud_probability"] for r in answer["results"]])}
    # one image, all ten classes (?k=10), best first: compare them sorted
    ranked = [rank["probability"] for rank in answer["top_k"]]
    return {"probabilities": np.array(ranked), "class_id": np.array([answer["class_id"]])}


def check_answer(protocol: str, workload: Workload, answer: dict[str, Any]) -> None:
    """Raise ``AssertionError`` unless every output in ``answer`` equals in-process ONNX
    Runtime's (relative 1e-4)."""
    got = answered(protocol, workload, answer)
    expected = dict(workload.expected)
    if "class_id" in got:
        expected["class_id"] = np.argmax(expected["probabilities"], axis=1)
        expected["probabilities"] = -np.sort(-expected["probabilities"], axis=1)
    for name, value in got.items():
        want = np.asarray(expected[name]).ravel()
        if not np.allclose(value.ravel(), want, rtol=1e-4, atol=1e-6):
            raise AssertionError(f"{workload.label} ({protocol}): {name} {value} != {want}")
