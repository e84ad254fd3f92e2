"""Image routes over real HTTP: same answers as the in-process model, and every bad input."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from core.model_store import load_model
from harness.images import b64, encode, load_test_images
from harness.local_server import LocalServer

pytestmark = pytest.mark.http
ROUTE, BATCH_ROUTE = "/v1/images/classify", "/v1/images/classify_batch"
IMAGES, _ = load_test_images(24)


def _upload(server: LocalServer, data: bytes, query: str = "") -> httpx.Response:
    files = {"image": ("upload.png", data, "application/octet-stream")}
    return httpx.post(server.url + ROUTE + query, files=files, timeout=30)


def _batch(server: LocalServer, body: Any, query: str = "") -> httpx.Response:
    return httpx.post(server.url + BATCH_ROUTE + query, json=body, timeout=30)


def _check_top_k(result: dict, k: int) -> None:
    values = [entry["probability"] for entry in result["top_k"]]
    assert len(values) == k and values == sorted(values, reverse=True)
    assert sum(values) <= 1 + 1e-6
    assert result["top_k"][0]["label"] == result["label"]


def test_png_uploads_match_the_in_process_model(server: LocalServer, image_model: dict) -> None:
    expected = load_model("image-classifier:latest", "cpu").run({"images": IMAGES})["probabilities"]
    labels = image_model["labels"]
    for pixels, want in zip(IMAGES, expected, strict=True):
        response = _upload(server, encode(pixels), "?k=10")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": "image-classifier", "version": image_model["version"]}
        assert body["class_id"] == int(want.argmax()) and body["label"] == labels[body["class_id"]]
        _check_top_k(body, 10)
        got = {entry["label"]: entry["probability"] for entry in body["top_k"]}
        np.testing.assert_allclose([got[label] for label in labels], want, atol=1e-5)


def test_batch_answers_in_order_like_single_uploads(server: LocalServer) -> None:
    response = _batch(server, {"images": [b64(encode(pixels)) for pixels in IMAGES]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(IMAGES)
    for pixels, result in zip(IMAGES, results, strict=True):
        _check_top_k(result, 3)
        assert _upload(server, encode(pixels)).json()["class_id"] == result["class_id"]


def test_jpeg_and_colour_uploads_are_accepted(server: LocalServer) -> None:
    response = _upload(server, encode(IMAGES[0], "JPEG", "RGB"), "?k=1")
    assert response.status_code == 200, response.text
    _check_top_k(response.json(), 1)


BAD_UPLOADS = [
    ("not an image", b"%PDF-1.4 definitely not a picture", "not_an_image"),
    ("truncated", encode(IMAGES[0])[:80], "corrupt_image"),
    ("empty upload", b"", "empty_image"),
    ("over the pixel limit", encode(np.zeros((4001, 4000), dtype=np.uint8)), "image_too_large"),
]


@pytest.mark.parametrize(("case", "data", "kind"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_get_400_naming_image(
    server: LocalServer, case: str, data: bytes, kind: str
) -> None:
    response = _upload(server, data)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == [
        {"loc": ["image"], "msg": response.json()["detail"][0]["msg"], "type": kind}
    ]
    assert "Traceback" not in response.text and "/tmp" not in response.text
    response = _batch(server, {"images": [b64(encode(IMAGES[0])), b64(data)]})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["images", 1]


@pytest.mark.parametrize("k", ["0", "11", "abc", "²", "9" * 5000])  # 5,000 digits: was a 500
def test_bad_k_is_400_naming_k(server: LocalServer, k: str) -> None:
    for response in (
        _upload(server, encode(IMAGES[0]), f"?k={k}"),
        _batch(server, {"images": [b64(encode(IMAGES[0]))]}, f"?k={k}"),
    ):
        assert response.status_code == 400, response.text
        detail = response.json()["detail"][0]
        assert (
            detail["loc"] == ["query", "k"] and detail["msg"] == "must be an integer from 1 to 10"
        )


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"images": ["x" * 8] * 257}, ["images"], "at most 256"),
        ({"images": []}, ["images"], "at least 1"),
        ({"images": [b64(encode(IMAGES[0])), "%%%not base64"]}, ["images", 1], "base64"),
    ],
    ids=["too many images", "no images", "bad base64"],
)
def test_bad_batches_get_400_naming_the_field(
    server: LocalServer, body: dict, loc: list, message: str
) -> None:
    response = _batch(server, body)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == loc and message in entry["msg"] for entry in detail), detail


def test_missing_upload_field_is_400(server: LocalServer) -> None:
    # A text part under another name; malformed bodies are in test_image_multipart.py.
    response = httpx.post(server.url + ROUTE, files={"picture": (None, "a photo")})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"][-1] == "image"


def test_service_still_answers_after_bad_inputs(server: LocalServer) -> None:
    for _, data, _ in BAD_UPLOADS:
        _upload(server, data)
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert _upload(server, encode(IMAGES[1])).status_code == 200
