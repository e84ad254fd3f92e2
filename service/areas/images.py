"""Image classification area: the upload and base64 routes, decoding, batch adapter, answers.

Conversion rule (every upload, any format Pillow reads, any size and colour mode):

1. Only the first frame is used; EXIF orientation is applied.
2. Transparency is composited onto white, then the image becomes 8-bit grayscale (``L``).
3. Fashion-MNIST is light garments on a black background. When the image's border (the outer
   tenth of each side) is light on average (above mid-grey, 127) and brighter than its centre
   (the middle half of each side), the image is taken to be dark-on-light, like a photo on a
   white table, and is inverted. (No Fashion-MNIST train or test image meets this condition.)
4. The aspect ratio is kept: the image is padded to a square with black (the background after
   step 3), centred, then resized to 28x28 with Pillow's Lanczos filter.

A 28x28 grayscale image that is already light-on-dark (a Fashion-MNIST image saved as PNG)
passes through unchanged. Images over ``MAX_PIXELS`` pixels, and requests whose images hold
more than ``DLSERVE_MAX_REQUEST_PIXELS`` together, are refused before decoding; decoding runs
off the event loop and stops when the client leaves.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
import warnings
from collections.abc import Callable
from typing import Annotated, Any

import bentoml
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps
from pydantic import BaseModel, Field, model_validator

from service.abandon import stop_if_set, unless_client_leaves, until_client_leaves
from service.area import (
    Area,
    BatchAdapter,
    ClassOutput,
    Endpoint,
    ModelSpec,
    ReadyModel,
    ServedModels,
    TensorInputs,
    rehearse_batched,
)
from service.batching import Arrays
from service.errors import RequestInputError
from service.json_answer import JSONAnswer
from service.metrics import IMAGE_PIXELS_DECODED
from service.model_contract import ModelMetadata, TensorSpec
from service.request_numbers import bounded_int
from service.served_model import ModelReference, reference
from service.uploads import UploadedFile

SIZE = 28
MAX_PIXELS = 16_000_000  # width x height of one upload, checked before its pixels are decoded
MAX_IMAGES = 256
MAX_K = 10
MID_GREY = 127
DEFAULT_K = 3


class ImageInputError(RequestInputError):
    """An input is not a usable image; ``loc`` names it, ``kind`` is the error type."""


ImageList = Annotated[
    list[str],
    Field(
        min_length=1,
        max_length=MAX_IMAGES,
        description="Base64 (standard alphabet) of each image file: PNG, JPEG, ...",
    ),
]


class ClassProbability(BaseModel):
    label: str
    probability: float


class ImageResult(BaseModel):
    label: str = Field(description="Most probable class.")
    class_id: int = Field(description="Its index in the model's labels.")
    top_k: list[ClassProbability] = Field(description="The k most probable classes, best first.")


class ImageClassifyResponse(ImageResult):
    model: ModelReference


class ImageBatchResponse(BaseModel):
    model: ModelReference
    results: list[ImageResult]


def decode(data: bytes, loc: list[str | int]) -> np.ndarray:
    """One image file -> ``uint8 [28, 28]`` by the module's conversion rule.

    Raises ImageInputError (at ``loc``) for an empty, unreadable, truncated or oversized file.
    """
    return convert(open_image(data, loc), loc)


def open_image(data: bytes, loc: list[str | int]) -> Image.Image:
    """One image file's header, pixels not yet decoded; ImageInputError (at ``loc``) for an
    empty, unreadable or oversized file."""
    if not data:
        raise ImageInputError(loc, "the image file is empty", "empty_image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _check_size decides
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageInputError(
                loc, f"image exceeds {MAX_PIXELS} pixels", "image_too_large"
            ) from exc
        except Exception as exc:  # UnidentifiedImageError and any parser failure on the header
            raise ImageInputError(loc, "not an image file Pillow can read", "not_an_image") from exc
    _check_size(image, loc)
    return image


def convert(image: Image.Image, loc: list[str | int]) -> np.ndarray:
    """An opened image -> ``uint8 [28, 28]``; ImageInputError (at ``loc``) for a truncated or
    corrupt file."""
    try:
        image.load()
        IMAGE_PIXELS_DECODED.inc(image.width * image.height)
        return _to_model_input(image)
    except Exception as exc:  # truncated data, bad chunks, broken EXIF: never a 500
        raise ImageInputError(loc, "truncated or corrupt image file", "corrupt_image") from exc


def _check_size(image: Image.Image, loc: list[str | int]) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            loc,
            f"image is {width}x{height} pixels; at most {MAX_PIXELS} pixels are accepted",
            "image_too_large",
        )
    if width == 0 or height == 0:
        raise ImageInputError(loc, "image has no pixels", "corrupt_image")


def _to_model_input(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    gray = image.convert("L")
    if _is_dark_on_light(np.asarray(gray)):
        gray = ImageOps.invert(gray)
    side = max(gray.size)
    square = Image.new("L", (side, side), 0)
    square.paste(gray, ((side - gray.width) // 2, (side - gray.height) // 2))
    return np.asarray(square.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


def _is_dark_on_light(pixels: np.ndarray) -> bool:
    """Border (outer tenth of each side) lighter than mid-grey and than the centre (middle half)."""
    height, width = pixels.shape
    edge_y, edge_x = max(1, height // 10), max(1, width // 10)
    border = np.ones_like(pixels, dtype=bool)
    border[edge_y : height - edge_y, edge_x : width - edge_x] = False
    centre = pixels[height // 4 : height - height // 4, width // 4 : width - width // 4]
    border_mean = pixels[border].mean()
    return bool(border_mean > MID_GREY and border_mean > centre.mean())


def decode_base64(images: list[str]) -> list[bytes]:
    """The image files of a batch; ImageInputError at ``images.<i>`` for bad base64."""
    files = []
    for index, text in enumerate(images):
        try:
            files.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ImageInputError(
                ["images", index], "not valid base64 (standard alphabet, padded)", "bad_base64"
            ) from exc
    return files


def to_arrays(
    files: list[bytes], locs: list[list[str | int]], max_pixels: int, stop: threading.Event
) -> Arrays:
    """A request's image files -> the graph's ``images`` input, ``uint8 [N, 28, 28]``.

    Every header is read first: ImageInputError at the request's field when the images hold
    more than ``max_pixels`` pixels together (``DLSERVE_MAX_REQUEST_PIXELS``), before any is
    decoded. Decoding stops with ``ClientGoneError`` between images once ``stop`` is set.
    """
    images = [open_image(data, loc) for data, loc in zip(files, locs, strict=True)]
    pixels = sum(image.width * image.height for image in images)
    if pixels > max_pixels:
        raise ImageInputError(
            locs[0][:1],
            f"the images hold {pixels} pixels together; at most {max_pixels} pixels per "
            "request (DLSERVE_MAX_REQUEST_PIXELS)",
            "too_many_pixels",
        )
    decoded = []
    for image, loc in zip(images, locs, strict=True):
        stop_if_set(stop)
        decoded.append(convert(image, loc))
    return {"images": np.stack(decoded)}


K_PARAMETER = {
    "name": "k",
    "in": "query",
    "required": False,
    "description": f"how many of the most probable classes to list (1 to {MAX_K})",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
}


def parse_k(raw: str | None) -> int:
    """The ``k`` query parameter: an integer from 1 to ``MAX_K`` in ASCII digits (default
    ``DEFAULT_K``); ``RequestInputError`` at ``query.k`` otherwise."""
    if raw is None:
        return DEFAULT_K
    return bounded_int(raw, ["query", "k"], 1, MAX_K, "k_out_of_range")


def to_results(outputs: Arrays, labels: list[str], k: int) -> list[dict[str, Any]]:
    """Graph outputs -> per image: best class and the ``k`` most probable (sorted, best first)."""
    probabilities = outputs["probabilities"]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    results = []
    for row, best in zip(probabilities.tolist(), order.tolist(), strict=True):
        top = [{"label": labels[i], "probability": row[i]} for i in best]
        results.append({"label": labels[best[0]], "class_id": best[0], "top_k": top})
    return results


IMAGES_INPUT = TensorSpec(name="images", dtype="uint8", shape=["batch", SIZE, SIZE])


class ClassifierMetadata(ModelMetadata):
    """What the image routes read of a stored model: at least ``MAX_K`` labels (top-k names
    them), ``uint8 [batch, 28, 28]`` images in, ``probabilities`` out."""

    labels: list[str] = Field(min_length=MAX_K)

    @model_validator(mode="after")
    def _fits_the_route(self) -> ClassifierMetadata:
        if self.inputs != [IMAGES_INPUT] or "probabilities" not in self.output_names():
            raise ValueError(
                f"takes {[spec.model_dump() for spec in self.inputs]} and gives "
                f"{self.output_names()}; the route needs [{IMAGES_INPUT.model_dump()}] in and "
                "probabilities out: retrain with `python -m training image`"
            )
        return self


MODEL = "image-classifier"
ROUTE = "/v1/images/classify"
BATCH_ROUTE = "/v1/images/classify_batch"


def decode_column(table: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Batch jobs: the ``image`` column (file bytes, or their base64 text as the batch route
    takes them: a JSON Lines file, a replayed payload log) -> decoded images and, per row,
    ``None`` or why it cannot be classified (``decode``'s and ``decode_base64``'s reasons)."""
    rows = table.num_rows
    files = table.column("image").to_pylist() if "image" in table.column_names else [None] * rows
    images = np.zeros((rows, SIZE, SIZE), dtype=np.uint8)
    reasons = np.full(rows, None, dtype=object)
    for row, data in enumerate(files):
        try:
            file = decode_base64([data])[0] if isinstance(data, str) else data
            images[row] = decode(file or b"", ["image", row])
        except ImageInputError as exc:
            reasons[row] = f"image: {exc}"
    return {"images": images}, reasons


def best_class(outputs: Arrays) -> np.ndarray:
    """Graph outputs -> per image the most probable class's index (the lower one on a tie, as
    ``to_results`` orders them)."""
    return np.argmax(outputs["probabilities"], axis=1)


def to_columns(outputs: Arrays, labels: list[str]) -> dict[str, np.ndarray]:
    """Graph outputs -> per image the best class (as ``to_results``) and its probability."""
    probabilities = outputs["probabilities"]
    best = best_class(outputs)
    return {
        "label": np.asarray(labels, dtype=object)[best],
        "class_id": best,
        "probability": probabilities[np.arange(len(best)), best],
    }


async def _classify(
    models: ServedModels,
    read: Callable[[], list[bytes]],
    field: str,
    ctx: bentoml.Context,
) -> tuple[ReadyModel, list[dict[str, Any]]]:
    """Read the request's image files (``read``), decode them within the pixel budget and
    classify them, top ``?k=`` classes each. Reading and decoding run off the event loop; they
    and the wait for inference stop when the client leaves; an image's errors are at
    ``[field]`` or ``[field, index]``."""
    k = parse_k(ctx.request.query_params.get("k"))
    max_pixels = models.settings.max_request_pixels

    def work(stop: threading.Event) -> Arrays:
        files = read()
        locs: list[list[str | int]] = (
            [[field]] if field == "image" else [[field, index] for index in range(len(files))]
        )
        return to_arrays(files, locs, max_pixels, stop)

    arrays = await unless_client_leaves(ctx.request, work)
    ready, outputs = await until_client_leaves(ctx.request, models.predict(MODEL, arrays))
    return ready, to_results(outputs, ready.contract.labels, k)


async def classify(
    models: ServedModels, image: UploadedFile, ctx: bentoml.Context
) -> ImageClassifyResponse:
    """Classify one image file (multipart field ``image``); ``?k=`` sets top-k (1-10)."""
    ready, results = await _classify(models, lambda: [image], "image", ctx)
    return JSONAnswer({"model": reference(ready), **results[0]})


async def classify_batch(
    models: ServedModels, images: ImageList, ctx: bentoml.Context
) -> ImageBatchResponse:
    """Classify 1 to 256 base64 image files, results in input order; ``?k=`` as above."""
    ready, results = await _classify(models, lambda: decode_base64(images), "images", ctx)
    return JSONAnswer({"model": reference(ready), "results": results})


def sample_image() -> bytes:
    """A PNG file: a light square on black, what a new version classifies before it serves."""
    image = Image.new("L", (SIZE, SIZE), 0)
    image.paste(200, (7, 7, 21, 21))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rehearse(ready: ReadyModel) -> None:
    """The sample upload through the route's decoding, the graph and its top-``MAX_K`` answer."""
    arrays = to_arrays([sample_image()], [["image"]], MAX_PIXELS, threading.Event())
    rehearse_batched(
        ready,
        arrays,
        lambda ready, outputs: {
            "model": reference(ready),
            "results": to_results(outputs, ready.contract.labels, MAX_K),
        },
    )


# The top class's probability: at least 0.1 (10 classes), mostly near 1: fine buckets there.
SCORE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)


AREA = Area(
    name="image",
    description="image classification (CNN on Fashion-MNIST)",
    models=(
        ModelSpec(
            MODEL,
            contract=ClassifierMetadata,
            rehearse=rehearse,
            score_output="confidence",
            score_buckets=SCORE_BUCKETS,
            class_output=ClassOutput(best_class, lambda ready: ready.contract.labels),
            tensors=TensorInputs(max_rows=MAX_IMAGES),  # any uint8 [28, 28] is an image
        ),
    ),
    endpoints=(
        Endpoint(ROUTE, classify, models=(MODEL,), query=(K_PARAMETER,)),
        Endpoint(BATCH_ROUTE, classify_batch, models=(MODEL,), query=(K_PARAMETER,)),
    ),
    batch=(
        BatchAdapter(
            model=MODEL,
            batch_size=1_024,
            input_columns=("image",),
            validate=lambda table, ready: decode_column(table),
            encode=lambda columns, ready: ({"images": columns["images"]}, {}),
            to_columns=lambda outputs, ready: to_columns(outputs, ready.contract.labels),
        ),
    ),
)
