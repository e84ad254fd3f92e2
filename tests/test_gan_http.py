"""``POST /v1/images/generate`` over real HTTP: byte-identical images for a seed, PNGs the
route's own classifier reads, the grid, and every bad input named."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from core.model_store import load_model
from harness.http_checks import assert_names_field_and_rule
from harness.local_server import LocalServer
from service.areas.gan import MAX_IMAGES, ROUTE
from service.areas.images import decode

pytestmark = pytest.mark.http


def _generate(server: LocalServer, **body: Any) -> httpx.Response:
    return httpx.post(server.url + ROUTE, json=body, timeout=30)


def _image(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_the_same_seed_gives_byte_identical_pngs(server: LocalServer) -> None:
    first = _generate(server, label="Sneaker", n=5, seed=42)
    assert first.status_code == 200, first.text
    again = _generate(server, class_id=7, n=5, seed=42).json()
    body = first.json()
    assert body["images"] == again["images"] and len(body["images"]) == 5
    assert (body["label"], body["class_id"], body["seed"]) == ("Sneaker", 7, 42)
    assert body["model"]["name"] == "image-generator"
    other = _generate(server, label="Sneaker", n=5, seed=43).json()
    assert other["images"] != body["images"]


def test_images_are_28x28_grayscale_pngs_and_a_seed_is_returned(server: LocalServer) -> None:
    body = _generate(server, label="Bag", n=3).json()
    images = [_image(text) for text in body["images"]]
    assert all(image.format == "PNG" and image.mode == "L" for image in images)
    assert all(image.size == (28, 28) for image in images)
    replay = _generate(server, label="Bag", n=3, seed=body["seed"]).json()
    assert replay["images"] == body["images"]


def test_image_i_does_not_depend_on_how_many_were_asked_for(server: LocalServer) -> None:
    few = _generate(server, class_id=1, n=2, seed=9).json()["images"]
    many = _generate(server, class_id=1, n=6, seed=9).json()["images"]
    assert many[:2] == few


@pytest.mark.parametrize(("n", "columns", "rows"), [(1, 1, 1), (8, 8, 1), (20, 8, 3)])
def test_the_grid_holds_every_image(server: LocalServer, n: int, columns: int, rows: int) -> None:
    body = _generate(server, label="Dress", n=n, seed=3, format="grid").json()
    assert len(body["images"]) == 1 and body["format"] == "grid"
    grid = np.asarray(_image(body["images"][0]))
    assert grid.shape == (rows * 28, columns * 28)
    singles = _generate(server, label="Dress", n=n, seed=3).json()["images"]
    last = np.asarray(_image(singles[-1]))
    row, column = divmod(n - 1, columns)
    np.testing.assert_array_equal(
        grid[row * 28 : row * 28 + 28, column * 28 : column * 28 + 28], last
    )


def test_generated_images_go_through_the_classifier_route(server: LocalServer) -> None:
    """The classifier route reads each generated PNG as the generator wrote it: its answers
    are the stored classifier's on the PNGs' own pixels, image by image."""
    images = _generate(server, label="Trouser", n=8, seed=1).json()["images"]
    answer = httpx.post(server.url + "/v1/images/classify_batch", json={"images": images})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    pixels = np.stack([np.asarray(_image(text)) for text in images])
    assert all(
        np.array_equal(decode(base64.b64decode(text), ["images", i]), pixels[i])
        for i, text in enumerate(images)
    ), "the route would not classify the generated pixels as they are"
    probabilities = load_model("image-classifier:latest", "cpu").run({"images": pixels})[
        "probabilities"
    ]
    assert [r["class_id"] for r in results] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(
        [r["top_k"][0]["probability"] for r in results], probabilities.max(axis=1), rtol=1e-5
    )


def test_concurrent_requests_answer_as_alone(server: LocalServer) -> None:
    seeds = list(range(100, 108))
    alone = [_generate(server, class_id=s % 10, n=4, seed=s).json()["images"] for s in seeds]
    with ThreadPoolExecutor(len(seeds)) as pool:
        together = list(
            pool.map(
                lambda s: _generate(server, class_id=s % 10, n=4, seed=s).json()["images"], seeds
            )
        )
    assert together == alone


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"label": "Hat"}, ["label"], "known labels: ['T-shirt/top', 'Trouser'"),
        ({"label": "Bag", "class_id": 8}, ["label"], "exactly one of label and class_id"),
        ({}, ["label"], "exactly one of label and class_id"),
        ({"class_id": 10}, ["class_id"], "from 0 to 9"),
        ({"label": "Bag", "n": 0}, ["n"], "greater than or equal to 1"),
        ({"label": "Bag", "n": MAX_IMAGES + 1}, ["n"], f"less than or equal to {MAX_IMAGES}"),
        ({"label": "Bag", "format": "jpeg"}, ["format"], "'png' or 'grid'"),
        ({"label": "Bag", "seed": -1}, ["seed"], "greater than or equal to 0"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    server: LocalServer, body: dict, loc: list, message: str
) -> None:
    assert_names_field_and_rule(_generate(server, **body), loc, message)
