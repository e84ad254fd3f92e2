"""One enabled model inside the service: loaded and running, or unavailable with the reason."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from core.model_store import ModelUnavailableError
from service.area import ModelSpec, ReadyModel
from service.batching import Arrays, MicroBatcher, OverloadedError
from service.config import Settings, variable
from service.errors import RequestInputError
from service.metrics import (
    BATCH_ROWS,
    INFERENCE_SECONDS,
    MODEL_INFO,
    PREDICTIONS,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    observe_scores,
)
from service.stepping import StepScheduler

log = logging.getLogger(__name__)


class ModelReference(BaseModel):
    """Which model answered: every route's ``model`` field (see ``ServedModel.reference``)."""

    name: str
    version: str


def reference(ready: ReadyModel) -> dict[str, str]:
    """``{"name", "version"}`` of the model that answered, as every response's ``model``."""
    return {"name": ready.name, "version": ready.version}


class ModelNotReadyError(RuntimeError):
    """The model is enabled but could not be loaded (HTTP 503 with the reason)."""


class ServedModel:
    """Loads ``spec``'s model at construction; never raises, records why a load failed.

    A batched model gets a ``MicroBatcher``, a stepwise one a ``StepScheduler``.
    """

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        self.spec = spec
        self.ready: ReadyModel | None = None
        self.error: str | None = None
        try:
            self.ready = spec.load(settings.provider, settings.intra_op_threads)
        except ModelUnavailableError as exc:
            self.error = str(exc)
            log.error("model %s is NOT available: %s", spec.tag, exc)
            return
        model = self.ready.model
        MODEL_INFO.labels(model=model.name, version=model.version, provider=model.provider).set(1)
        if spec.program is not None:
            self.scheduler: StepScheduler[Any] = StepScheduler(
                spec.program(self.ready),
                max_active=settings.max_active_sequences,
                max_waiting=settings.max_waiting_sequences,
                on_change=self._record_sequences,
                on_step=self._record_step,
            )
        else:
            budget = spec.budget
            self.request_budget, batch_budget = (
                settings.budget(budget.unit) if budget is not None else (None, None)
            )
            self.batcher = MicroBatcher(
                model.run,
                max_batch_rows=settings.max_batch_rows,
                max_wait_ms=settings.max_wait_ms,
                max_queue_rows=settings.max_queue_rows,
                on_batch=self._record_batch,
                join=spec.join,
                width=budget.width if budget is not None else None,
                max_batch_cost=batch_budget,
            )

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self, routes: list[dict[str, Any]]) -> dict[str, Any]:
        """This model's entry in ``GET /v1/models``: the stored model (or why it is unavailable)
        and its ``routes``; ``route`` and ``request_schema`` repeat the first one's."""
        first = {"route": routes[0]["route"], "request_schema": routes[0]["request_schema"]}
        listed = {
            **first,
            "routes": routes,
            "kind": "stepwise" if self.spec.stepwise else "batched",
        }
        if self.ready is None:
            return {"name": self.name, "status": "unavailable", "reason": self.error, **listed}
        return {**self.ready.model.describe(), **listed}

    def _require_ready(self) -> ReadyModel:
        if self.ready is None:
            PREDICTIONS.labels(model=self.name, outcome="unavailable").inc()
            raise ModelNotReadyError(f"model {self.name!r} is not loaded: {self.error}")
        return self.ready

    def _check_budget(self, inputs: Arrays) -> None:
        """``RequestInputError`` (400 at the budget's field) for a request costing more than
        the spec's per-request budget."""
        budget = self.spec.budget
        if budget is None or self.request_budget is None:
            return
        rows = len(next(iter(inputs.values())))
        cost = rows * budget.width(inputs)
        if cost > self.request_budget:
            raise RequestInputError(
                list(budget.loc),
                f"the request costs {cost} {budget.unit} ({budget.counted}); at most "
                f"{self.request_budget} {budget.unit} per request "
                f"({variable('max_request_' + budget.unit)})",
                f"too_many_{budget.unit}",
            )

    async def predict(self, inputs: Arrays) -> Arrays:
        """Run ``inputs`` through the micro-batcher; count the outcome per request.
        ``RequestInputError`` when the request is over the model's budget."""
        self._require_ready()
        self._check_budget(inputs)
        try:
            outputs = await self.batcher.submit(inputs)
        except OverloadedError:
            PREDICTIONS.labels(model=self.name, outcome="overloaded").inc()
            raise
        except Exception:
            PREDICTIONS.labels(model=self.name, outcome="error").inc()
            raise
        PREDICTIONS.labels(model=self.name, outcome="ok").inc()
        return outputs

    def stream(self, request: Any) -> AsyncIterator[Any]:
        """Admit a stepwise request (``OverloadedError`` when full); its outputs as produced."""
        self._require_ready()
        try:
            outputs = self.scheduler.admit(request)
        except OverloadedError:
            PREDICTIONS.labels(model=self.name, outcome="overloaded").inc()
            raise
        return self._counted(outputs)

    async def _counted(self, outputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for output in outputs:
                yield output
        except Exception:
            PREDICTIONS.labels(model=self.name, outcome="error").inc()
            raise
        finally:
            await outputs.aclose()  # type: ignore[attr-defined]
        PREDICTIONS.labels(model=self.name, outcome="ok").inc()

    def _record_batch(self, rows: int, seconds: float, outputs: Arrays) -> None:
        INFERENCE_SECONDS.labels(model=self.name).observe(seconds)
        BATCH_ROWS.labels(model=self.name).observe(rows)
        if self.spec.score_output is not None:
            observe_scores(self.name, outputs[self.spec.score_output])

    def _record_step(self, sequences: int, seconds: float) -> None:
        INFERENCE_SECONDS.labels(model=self.name).observe(seconds)
        BATCH_ROWS.labels(model=self.name).observe(sequences)

    def _record_sequences(self, active: int, waiting: int) -> None:
        REQUESTS_RUNNING.labels(model=self.name).set(active)
        REQUESTS_WAITING.labels(model=self.name).set(waiting)
