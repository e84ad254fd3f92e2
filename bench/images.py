"""``python -m bench.images``: the image routes under wrk vs the in-process ONNX Runtime ceiling.

Starts the service on 127.0.0.1 with only ``image-classifier:latest`` loaded, drives
``/v1/images/classify`` with one PNG per multipart request and ``/v1/images/classify_batch``
with 64 base64 PNGs per JSON request, at concurrency 1, 16 and 64, and prints images/s, p50
and p99 latency beside ONNX Runtime's own images/s at the same batch size (same run).
"""

from __future__ import annotations

import json

import httpx

from bench.runner import Scenario, parse_args, run_benchmark
from harness.images import b64, encode, load_test_images
from service.areas.images import BATCH_ROUTE, MODEL, ROUTE

BATCH_SIZE = 64


def scenarios() -> list[Scenario]:
    """One PNG per multipart upload, and 64 base64 PNGs per JSON batch."""
    pixels, _ = load_test_images(BATCH_SIZE)
    files = [encode(image) for image in pixels]
    upload = httpx.Request("POST", "http://x", files={"image": ("item.png", files[0])})
    batch = json.dumps({"images": [b64(data) for data in files]}).encode()
    return [
        Scenario(
            "classify 1 image",
            f"{MODEL}:latest",
            ROUTE,
            upload.read(),
            1,
            {"images": pixels[:1]},
            upload.headers["content-type"],
        ),
        Scenario(
            f"classify_batch {BATCH_SIZE}",
            f"{MODEL}:latest",
            BATCH_ROUTE,
            batch,
            BATCH_SIZE,
            {"images": pixels},
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args("images", __doc__, argv)
    run_benchmark("images", scenarios(), args, areas="image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
