"""One enabled model inside the service: loaded and batched, or unavailable with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.model_store import LoadedModel, ModelUnavailableError, load_model
from service.batching import Arrays, Join, MicroBatcher, OverloadedError, concatenate
from service.config import Settings
from service.metrics import BATCH_ROWS, INFERENCE_SECONDS, MODEL_INFO, PREDICTIONS, observe_scores

log = logging.getLogger(__name__)


class ModelReference(BaseModel):
    """Which model answered: every route's ``model`` field (see ``ServedModel.reference``)."""

    name: str
    version: str


class ModelNotReadyError(RuntimeError):
    """The model is enabled but could not be loaded (HTTP 503 with the reason)."""


@dataclass(frozen=True)
class ModelSpec:
    """How one stored model is served.

    ``area``: the ``DLSERVE_MODELS`` name that enables it; ``name``: its name in the model
    store (the latest version is served); ``route``: the prediction route; ``score_output``:
    the output whose values feed the score histogram (drift signal); ``request_schema``: one
    input row's pydantic model, shown by ``/v1/models``; ``check``: inspects the stored
    metadata and raises ModelUnavailableError when the model does not fit the route;
    ``join``: how the micro-batcher stacks concurrent requests' inputs.
    """

    area: str
    name: str
    route: str
    score_output: str
    request_schema: type[BaseModel]
    check: Callable[[dict[str, Any]], None] | None = None
    join: Join = concatenate

    @property
    def tag(self) -> str:
        return f"{self.name}:latest"


class ServedModel:
    """Loads ``spec``'s model at construction; never raises, records why a load failed."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        self.spec = spec
        self.model: LoadedModel | None = None
        self.error: str | None = None
        try:
            model = load_model(spec.tag, settings.provider, settings.intra_op_threads)
            if spec.check is not None:
                spec.check(model.metadata)
        except ModelUnavailableError as exc:
            self.error = str(exc)
            log.error("model %s is NOT available: %s", spec.tag, exc)
            return
        self.model = model
        MODEL_INFO.labels(model=model.name, version=model.version, provider=model.provider).set(1)
        self.batcher = MicroBatcher(
            model.run,
            max_batch_rows=settings.max_batch_rows,
            max_wait_ms=settings.max_wait_ms,
            max_queue_rows=settings.max_queue_rows,
            on_batch=self._record_batch,
            join=spec.join,
        )

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def name(self) -> str:
        return self.spec.name

    def reference(self) -> dict[str, str]:
        """``{"name", "version"}`` as every prediction response carries it."""
        assert self.model is not None
        return {"name": self.model.name, "version": self.model.version}

    def describe(self) -> dict[str, Any]:
        """This model's entry in ``GET /v1/models``."""
        route = {
            "route": self.spec.route,
            "request_schema": self.spec.request_schema.model_json_schema(),
        }
        if self.model is None:
            return {"name": self.name, "status": "unavailable", "reason": self.error, **route}
        return {**self.model.describe(), **route}

    async def predict(self, inputs: Arrays) -> Arrays:
        """Run ``inputs`` through the micro-batcher; count the outcome per row."""
        if self.model is None:
            PREDICTIONS.labels(model=self.name, outcome="unavailable").inc()
            raise ModelNotReadyError(f"model {self.name!r} is not loaded: {self.error}")
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

    def _record_batch(self, rows: int, seconds: float, outputs: Arrays) -> None:
        INFERENCE_SECONDS.labels(model=self.name).observe(seconds)
        BATCH_ROWS.labels(model=self.name).observe(rows)
        observe_scores(self.name, outputs[self.spec.score_output])
