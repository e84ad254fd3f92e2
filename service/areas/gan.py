"""Image generation area: ``POST /v1/images/generate`` over the conditional GAN.

A request names a class (``label`` or ``class_id``, exactly one), how many images (``n``, 1 to
64) and optionally a ``seed``; the noise is drawn here from the seed
(``core.image_generation.draw_noise``), so the same seed gives byte-identical PNGs wherever
the same model version runs. Without a seed one is drawn and returned, so any answer can be
reproduced. ``format`` is ``png`` (one base64 PNG per image) or ``grid`` (one PNG holding all,
eight to a row). Concurrent requests are joined into one generator call by the micro-batcher.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import secrets
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from core.image_generation import SIZE, draw_noise, to_pixels
from core.model_store import ModelUnavailableError
from service.area import Area, Endpoint, ModelSpec, ReadyModel, ServedModels, TensorInputs
from service.batching import Arrays
from service.errors import RequestInputError
from service.served_model import ModelReference, reference

MODEL = "image-generator"
ROUTE = "/v1/images/generate"
MAX_IMAGES = 64
GRID_COLUMNS = 8


class GeneratedImages(BaseModel):
    model: ModelReference
    label: str = Field(description="the class generated")
    class_id: int
    seed: int = Field(description="the seed used: send it back for the same images")
    format: Literal["png", "grid"]
    images: list[str] = Field(description="base64 PNGs: one per image, or one grid")


def check_generator(metadata: dict[str, Any]) -> None:
    """Refuse a stored model that does not take noise and a class and give 28x28 images."""
    names = [spec["name"] for spec in metadata["inputs"]]
    outputs = metadata["outputs"]
    fits = outputs and outputs[0]["shape"][1:] == [SIZE, SIZE]
    if names != ["noise", "class_id"] or not fits or not metadata.get("labels"):
        raise ModelUnavailableError(
            f"model {metadata['name']!r} takes {names} and gives {outputs}; the route needs "
            f"noise and class_id in, [batch, {SIZE}, {SIZE}] images out, and stored labels: "
            "retrain with `python -m training gan`"
        )


def resolve_class(labels: list[str], label: str | None, class_id: int | None) -> int:
    """The requested class's id; RequestInputError naming the field otherwise."""
    if (label is None) == (class_id is None):
        raise RequestInputError(
            ["label"], "give exactly one of label and class_id", "one_class_required"
        )
    if label is not None:
        if label not in labels:
            raise RequestInputError(
                ["label"], f"unknown label {label!r}; known labels: {labels}", "unknown_label"
            )
        return labels.index(label)
    assert class_id is not None
    if not 0 <= class_id < len(labels):
        raise RequestInputError(
            ["class_id"], f"class_id must be from 0 to {len(labels) - 1}", "unknown_class"
        )
    return class_id


def encode_png(pixels: np.ndarray) -> str:
    """One ``uint8 [h, w]`` grayscale image as base64 PNG (deterministic bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def grid(pixels: np.ndarray) -> np.ndarray:
    """``[n, 28, 28]`` -> one image of up to ``GRID_COLUMNS`` per row (black where none)."""
    count = len(pixels)
    columns = min(count, GRID_COLUMNS)
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * SIZE, columns * SIZE), dtype=np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        canvas[row * SIZE : (row + 1) * SIZE, column * SIZE : (column + 1) * SIZE] = image
    return canvas


def to_pngs(images: np.ndarray, layout: str) -> list[str]:
    pixels = to_pixels(images)
    return [encode_png(grid(pixels))] if layout == "grid" else [encode_png(p) for p in pixels]


async def generate(
    models: ServedModels,
    label: Annotated[str | None, Field(max_length=64, description="a class name")] = None,
    class_id: Annotated[int | None, Field(ge=0, description="a class index")] = None,
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES, description="images to generate")] = 1,
    seed: Annotated[int | None, Field(ge=0, le=2**63 - 1)] = None,
    format: Annotated[Literal["png", "grid"], Field(description="png or grid")] = "png",
) -> GeneratedImages:
    """Generate ``n`` images of one class; the same seed gives the same PNGs."""
    ready = models.ready(MODEL)
    labels: list[str] = ready.metadata["labels"] if ready else []
    chosen = resolve_class(labels, label, class_id) if ready else 0
    used_seed = secrets.randbits(63) if seed is None else seed
    noise_dim = int(ready.metadata["noise_dim"]) if ready else 1
    inputs = {
        "noise": draw_noise(used_seed, n, noise_dim),
        "class_id": np.full(n, chosen, dtype=np.int64),
    }
    ready, outputs = await models.predict(MODEL, inputs)
    pngs = await asyncio.to_thread(to_pngs, outputs["images"], format)
    return JSONResponse(
        {
            "model": reference(ready),
            "label": labels[chosen],
            "class_id": chosen,
            "seed": used_seed,
            "format": format,
            "images": pngs,
        }
    )


def check_classes(inputs: Arrays, ready: ReadyModel) -> None:
    """Open Inference Protocol inputs: every ``class_id`` names a stored label (the noise is
    any finite number)."""
    classes = inputs["class_id"]
    labels = len(ready.metadata["labels"])
    if classes.min() < 0 or classes.max() >= labels:
        raise RequestInputError(
            ["class_id"], f"class ids must be from 0 to {labels - 1}", "unknown_class"
        )


AREA = Area(
    name="gan",
    description="image generation (conditional GAN on Fashion-MNIST)",
    models=(
        ModelSpec(
            MODEL,
            check=check_generator,
            tensors=TensorInputs(max_rows=MAX_IMAGES, check=check_classes),
        ),
    ),
    endpoints=(Endpoint(ROUTE, generate, models=(MODEL,)),),
)
