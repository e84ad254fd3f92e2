"""One enabled model inside the service: loaded and batched, or unavailable with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from service.batching import Arrays, MicroBatcher, OverloadedError
from service.config import Settings
from service.metrics import BATCH_ROWS, INFERENCE_SECONDS, MODEL_INFO, PREDICTIONS, observe_scores
from service.model_store import LoadedModel, ModelUnavailableError, load_model

log = logging.getLogger(__name__)


class ModelNotReadyError(RuntimeError):
    """The model is enabled but could not be loaded (HTTP 503 with the reason)."""


class ServedModel:
    """Loads ``tag`` at construction; never raises, records why a load failed instead.

    ``score_output`` names the output whose values feed the score histogram (drift signal).
    ``check`` may inspect the loaded metadata and raise ModelUnavailableError when the model
    does not fit the route that serves it. ``route`` and ``request_schema`` (one input row's
    pydantic model) are shown by ``/v1/models`` so clients see what to send.
    """

    def __init__(
        self,
        tag: str,
        settings: Settings,
        score_output: str,
        check: Callable[[dict[str, Any]], None] | None = None,
        route: str = "",
        request_schema: type[BaseModel] | None = None,
    ) -> None:
        self.tag = tag
        self.route = route
        self.request_schema = request_schema
        self.score_output = score_output
        self.model: LoadedModel | None = None
        self.error: str | None = None
        try:
            model = load_model(tag, settings.provider, settings.intra_op_threads)
            if check is not None:
                check(model.metadata)
        except ModelUnavailableError as exc:
            self.error = str(exc)
            log.error("model %s is NOT available: %s", tag, exc)
            return
        self.model = model
        MODEL_INFO.labels(model=model.name, version=model.version, provider=model.provider).set(1)
        self.batcher = MicroBatcher(
            model.run,
            max_batch_rows=settings.max_batch_rows,
            max_wait_ms=settings.max_wait_ms,
            max_queue_rows=settings.max_queue_rows,
            on_batch=self._record_batch,
        )

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def name(self) -> str:
        return self.model.name if self.model else self.tag.split(":")[0]

    def reference(self) -> dict[str, str]:
        """``{"name", "version"}`` as every prediction response carries it."""
        assert self.model is not None
        return {"name": self.model.name, "version": self.model.version}

    def describe(self) -> dict[str, Any]:
        """This model's entry in ``GET /v1/models``."""
        route = {"route": self.route}
        if self.request_schema is not None:
            route["request_schema"] = self.request_schema.model_json_schema()
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
        observe_scores(self.name, outputs[self.score_output])
