"""Image generation area: ``POST /v1/images/generate`` over the conditional GAN.

A request names a class (``label`` or ``class_id``, exactly one), how many images (``n``, 1 to
64) and optionally a ``seed``; the noise is drawn here from the seed
(``core.image_generation.draw_noise``), so the same seed gives byte-identical PNGs wherever
the same model version runs. Without a seed one is drawn and returned, so any answer can be
reproduced. ``format`` is ``png`` (one base64 PNG per image) or ``grid`` (one PNG holding all,
eight to a row). Concurrent requests are joined into one generator call by the micro-batcher.
On ``/v2`` a client sends the noise itself: each value must lie within ``NOISE_LIMIT`` (a
standard normal draw never comes near it; far beyond it the graph overflows to NaN).
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
from pydantic import BaseModel, Field, model_validator
from starlette.responses import JSONResponse

from core.image_generation import SIZE, draw_noise, to_pixels
from service.area import (
    Area,
    Endpoint,
    ModelSpec,
    ReadyModel,
    ServedModels,
    TensorInputs,
    rehearse_batched,
)
from service.batching import Arrays
from service.errors import RequestInputError
from service.model_contract import ModelMetadata
from service.served_model import ModelReference, reference

MODEL = "image-generator"
ROUTE = "/v1/images/generate"
MAX_IMAGES = 64
GRID_COLUMNS = 8
NOISE_LIMIT = 100.0  # |noise| on /v2; seeded standard normal draws stay far below it


class GeneratedImages(BaseModel):
    model: ModelReference
    label: str = Field(description="the class generated")
    class_id: int
    seed: int = Field(description="the seed used: send it back for the same images")
    format: Literal["png", "grid"]
    images: list[str] = Field(description="base64 PNGs: one per image, or one grid")


class GeneratorMetadata(ModelMetadata):
    """What the generation routes read of a stored model: ``noise_dim`` (the noise drawn per
    image), its labels, noise and class ids in, ``[batch, 28, 28]`` images out."""

    labels: list[str] = Field(min_length=1)
    noise_dim: int = Field(strict=True, ge=1, le=4096)

    @model_validator(mode="after")
    def _fits_the_route(self) -> GeneratorMetadata:
        outputs = self.outputs
        fits = outputs[0].name == "images" and outputs[0].shape[1:] == [SIZE, SIZE]
        if self.input_names() != ["noise", "class_id"] or not fits:
            raise ValueError(
                f"takes {self.input_names()} and gives {self.output_names()}; the route needs "
                f"noise and class_id in, [batch, {SIZE}, {SIZE}] images out: retrain with "
                "`python -m training gan`"
            )
        if self.inputs[0].shape[1:] != [self.noise_dim]:
            raise ValueError(
                f"noise_dim {self.noise_dim} differs from the noise input's shape "
                f"{self.inputs[0].shape}"
            )
        return self


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
    contract: GeneratorMetadata | None = ready.contract if ready else None
    chosen = resolve_class(contract.labels, label, class_id) if contract else 0
    used_seed = secrets.randbits(63) if seed is None else seed
    inputs = generator_inputs(contract.noise_dim if contract else 1, chosen, n, used_seed)
    ready, outputs = await models.predict(MODEL, inputs)
    pngs = await asyncio.to_thread(to_pngs, outputs["images"], format)
    return JSONResponse(answer(ready, pngs, chosen, used_seed, format))


def generator_inputs(noise_dim: int, chosen: int, n: int, seed: int) -> Arrays:
    """The graph's inputs for ``n`` images of class ``chosen``, noise drawn from ``seed``."""
    return {
        "noise": draw_noise(seed, n, noise_dim),
        "class_id": np.full(n, chosen, dtype=np.int64),
    }


def answer(
    ready: ReadyModel, pngs: list[str], chosen: int, seed: int, layout: str
) -> dict[str, Any]:
    """The route's answer: the images and how to reproduce them."""
    return {
        "model": reference(ready),
        "label": ready.contract.labels[chosen],
        "class_id": chosen,
        "seed": seed,
        "format": layout,
        "images": pngs,
    }


def check_tensors(inputs: Arrays, ready: ReadyModel) -> None:
    """Open Inference Protocol inputs: every ``class_id`` names a stored label and every noise
    value lies within ``NOISE_LIMIT`` (beyond it the graph's outputs overflow to NaN)."""
    classes = inputs["class_id"]
    labels = len(ready.contract.labels)
    if classes.min() < 0 or classes.max() >= labels:
        raise RequestInputError(
            ["class_id"], f"class ids must be from 0 to {labels - 1}", "unknown_class"
        )
    if np.abs(inputs["noise"]).max() > NOISE_LIMIT:
        raise RequestInputError(
            ["noise"], f"values must lie from -{NOISE_LIMIT:g} to {NOISE_LIMIT:g}", "out_of_range"
        )


def rehearse(ready: ReadyModel) -> None:
    """Two images of the last class through the route's encoding, PNGs and answer."""
    chosen = len(ready.contract.labels) - 1
    inputs = generator_inputs(ready.contract.noise_dim, chosen, 2, seed=0)
    check_tensors(inputs, ready)
    rehearse_batched(
        ready,
        inputs,
        lambda ready, outputs: answer(ready, to_pngs(outputs["images"], "grid"), chosen, 0, "grid"),
    )


AREA = Area(
    name="gan",
    description="image generation (conditional GAN on Fashion-MNIST)",
    models=(
        ModelSpec(
            MODEL,
            contract=GeneratorMetadata,
            rehearse=rehearse,
            tensors=TensorInputs(max_rows=MAX_IMAGES, check=check_tensors),
        ),
    ),
    endpoints=(Endpoint(ROUTE, generate, models=(MODEL,)),),
)
