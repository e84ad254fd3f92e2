"""Sums: ``POST /v1/sums`` adds up each row of four numbers with the trained regressor (the
add-an-area recipe's area)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

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
from service.model_contract import ModelMetadata
from service.served_model import ModelReference, reference

MODEL = "sum-regressor"
MAX_ROWS = 100

Number = Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)]
Row = Annotated[list[Number], Field(min_length=4, max_length=4)]


class SumsResponse(BaseModel):
    model: ModelReference
    totals: list[float]


class SumMetadata(ModelMetadata):
    """What the route reads: the graph's ``numbers`` input and ``total`` output."""

    metrics: dict[str, float]


def answer(ready: ReadyModel, outputs: Arrays) -> dict:
    return {"model": reference(ready), "totals": outputs["total"].tolist()}


async def add_up(
    models: ServedModels, rows: Annotated[list[Row], Field(min_length=1, max_length=MAX_ROWS)]
) -> SumsResponse:
    """Each row's total, as the regressor estimates it."""
    ready, outputs = await models.predict(MODEL, {"numbers": np.asarray(rows, dtype=np.float32)})
    return JSONResponse(answer(ready, outputs))


def rehearse(ready: ReadyModel) -> None:
    rehearse_batched(ready, {"numbers": np.ones((1, 4), dtype=np.float32)}, answer)


AREA = Area(
    name="sums",
    models=(
        ModelSpec(
            MODEL,
            contract=SumMetadata,
            rehearse=rehearse,
            score_output=None,
            tensors=TensorInputs(max_rows=MAX_ROWS),
        ),
    ),
    endpoints=(Endpoint("/v1/sums", add_up, models=(MODEL,)),),
)
