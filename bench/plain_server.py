"""The plain server of the side-by-side bench: FastAPI under uvicorn doing dlserve's work with
none of its serving stack (no micro-batching, no BentoML): the same request bodies, parsed and
validated by the same pydantic models and image decoding, the same ONNX files on ONNX Runtime
with one thread, answers as the graph's outputs. ``/noop`` reads the body and answers a
constant: the floor of the HTTP stack.

``uvicorn bench.plain_server:app --workers N`` with ``BENCH_FRAUD_ONNX`` and
``BENCH_IMAGE_ONNX`` naming the files.
"""

from __future__ import annotations

import os
import threading
from typing import Annotated, Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, Request
from pydantic import BaseModel

from service.areas import fraud, images
from service.config import Settings


def _session(variable: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.environ[variable], options, providers=["CPUExecutionProvider"])


SESSIONS = {"fraud": _session("BENCH_FRAUD_ONNX"), "image": _session("BENCH_IMAGE_ONNX")}
MAX_PIXELS = Settings().max_request_pixels  # dlserve's default budget, checked the same way
NEVER = threading.Event()  # dlserve stops decoding for a client that left; nothing stops here
app = FastAPI()


class FraudRequest(BaseModel):
    transactions: fraud.Transactions


def _outputs(model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    session = SESSIONS[model]
    names = [output.name for output in session.get_outputs()]
    return {
        "outputs": dict(zip(names, (v.tolist() for v in session.run(names, inputs)), strict=True))
    }


@app.post("/v1/fraud/score")
def score(body: FraudRequest) -> dict[str, Any]:
    return _outputs("fraud", fraud.to_arrays(body.transactions))


@app.post("/v1/images/classify")
def classify(image: Annotated[bytes, File()]) -> dict[str, Any]:
    return _outputs("image", images.to_arrays([image], [["image"]], MAX_PIXELS, NEVER))


@app.post("/noop")
async def noop(request: Request) -> dict[str, bool]:
    await request.body()
    return {"ok": True}
