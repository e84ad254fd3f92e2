"""A toy stepwise area, declared entirely in the test suite: ``POST /v1/toy/count`` streams
``start + 1, start + 2, ...`` one step at a time; every running request advances in one call of
a one-node ONNX graph (``toy-counter``: ``next = value + 1``, registered by the tests)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from service.area import Area, Endpoint, ModelSpec, ReadyModel, ServedModels

MODEL = "toy-counter"


@dataclass
class Count:
    value: int
    remaining: int
    delay_s: float
    outputs: list[dict[str, Any]] = field(default_factory=list)


class Counter:
    """The ``StepProgram``: one graph call per step for every running count."""

    def __init__(self, ready: ReadyModel) -> None:
        self.model = ready.model

    def start(self, request: dict[str, Any]) -> Count:
        return Count(request["start"], request["steps"], request["delay_ms"] / 1000)

    def step(self, states: Sequence[Count]) -> None:
        time.sleep(max(state.delay_s for state in states))
        values = np.array([state.value for state in states], dtype=np.int64)
        for state, value in zip(states, self.model.run({"value": values})["next"], strict=True):
            state.value, state.remaining = int(value), state.remaining - 1
            state.outputs.append({"value": state.value, "batch": len(states)})

    def take_outputs(self, state: Count) -> list[dict[str, Any]]:
        taken, state.outputs = state.outputs, []
        return taken

    def finished(self, state: Count) -> bool:
        return state.remaining <= 0

    def coalesce(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return outputs  # every count is its own event


async def count(
    models: ServedModels,
    start: Annotated[int, Field(ge=0, le=1000)],
    steps: Annotated[int, Field(ge=1, le=10_000)],
    delay_ms: Annotated[int, Field(ge=0, le=100)] = 0,
) -> AsyncIterator[dict[str, Any]]:
    """Stream ``steps`` counts from ``start`` as server-sent events."""
    request = {"start": start, "steps": steps, "delay_ms": delay_ms}
    _, outputs = await models.stream(MODEL, [request])
    return _counts(outputs)


async def _counts(outputs: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The one sequence's outputs; closing this closes ``outputs`` at once (frees its place)."""
    try:
        async for _, output in outputs:
            yield output
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]


AREA = Area(
    name="toy-counter",
    models=(ModelSpec(MODEL, program=Counter),),
    endpoints=(Endpoint("/v1/toy/count", count, models=(MODEL,)),),
)
