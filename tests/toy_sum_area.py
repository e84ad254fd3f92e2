"""A toy batched area, declared entirely in the test suite: ``POST /v1/toy/sum`` adds up each
row of three numbers with a one-node ONNX graph (``toy-sum``, registered by the tests)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from service.area import Area, BatchAdapter, Endpoint, ModelSpec, ServedModels, TensorInputs
from service.columns import ColumnRules
from service.served_model import ModelReference, reference

MODEL = "toy-sum"


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    a: float = Field(ge=-1000, le=1000)
    b: float = Field(ge=-1000, le=1000)
    c: float = Field(ge=-1000, le=1000)


Rows = Annotated[list[Row], Field(min_length=1, max_length=100)]


class SumResponse(BaseModel):
    model: ModelReference
    sums: list[float]


RULES = ColumnRules.from_model(Row)


def to_arrays(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": np.stack([columns[name] for name in "abc"], axis=1).astype(np.float32)}


async def add_up(models: ServedModels, rows: Rows) -> SumResponse:
    """The sum of each row."""
    columns = {name: np.array([getattr(row, name) for row in rows]) for name in "abc"}
    ready, outputs = await models.predict(MODEL, to_arrays(columns))
    return JSONResponse({"model": reference(ready), "sums": outputs["total"].tolist()})


AREA = Area(
    name="toy-sum",
    # a tensor model by declaration: /v2 serves it (the graph sums any finite numbers)
    models=(ModelSpec(MODEL, score_output=None, tensors=TensorInputs(max_rows=100)),),
    endpoints=(Endpoint("/v1/toy/sum", add_up, models=(MODEL,)),),
    batch=(
        BatchAdapter(
            model=MODEL,
            input_columns=("a", "b", "c"),
            validate=lambda table, ready: RULES.validate(table),
            encode=lambda columns, ready: (to_arrays(columns), {}),
            to_columns=lambda outputs, ready: {"total": outputs["total"]},
        ),
    ),
)
