"""The dlserve BentoML service: every enabled model behind versioned ``/v1/`` routes.

``bentoml serve`` at the repository root starts ``DLServe`` (see ``bentofile.yaml``). Models
load in ``__init__``; a model that is missing, corrupted or denied its required provider is
reported by ``/v1/models`` and keeps ``/readyz`` at 503, while the process stays up.

To serve a new model: describe it with a ``ModelSpec`` in its area module, add the spec to
``MODEL_SPECS`` and write its route below (validate with pydantic, build arrays, call
``self._predict``, shape the answer).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import fraud, sentiment
from service import images as image_api
from service.batch import http as batch_http
from service.batching import Arrays, OverloadedError
from service.config import Settings
from service.errors import BodyLimitMiddleware, error_response
from service.metrics import RejectedRequestCounter
from service.multipart_guard import SingleFileUploadGuard
from service.served_model import ModelNotReadyError, ModelSpec, ServedModel

log = logging.getLogger("dlserve")
SETTINGS = Settings.from_env()
MODEL_SPECS: tuple[ModelSpec, ...] = (fraud.SPEC, image_api.SPEC, *sentiment.SPECS)


class ErrorAnswer(Exception):
    """Stops a route with a ready-made error response."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def list_models(_: Request) -> JSONResponse:
    """``GET /v1/models``: every enabled model, loaded or not, with its provider and schema."""
    service = bentoml.get_current_service()
    return JSONResponse({"models": [m.describe() for m in service.served.values()]})


v1_app = Starlette(
    routes=[
        Route("/models", list_models, methods=["GET"]),
        Route("/batch/jobs/{job_id}/{name}", batch_http.download, methods=["GET"]),
    ]
)


@bentoml.service(
    name="dlserve",
    workers=SETTINGS.workers,
    traffic={"timeout": 60},
    http={"cors": {"enabled": False}},
)
class DLServe:
    """Loads the enabled models once per worker; routes validate, batch and answer."""

    def __init__(self) -> None:
        self.served = {
            spec.name: ServedModel(spec, SETTINGS)
            for spec in MODEL_SPECS
            if spec.area in SETTINGS.models
        }
        for served in self.served.values():
            state = f"ready on {served.model.provider}" if served.model else "UNAVAILABLE"
            log.info("model %s (%s): %s", served.name, served.spec.route, state)
        self.text_encoders = sentiment.load_encoders(self.served)
        self.default_sentiment = sentiment.default_model(self.served)

    def __is_ready__(self) -> bool:
        return all(served.ready for served in self.served.values())

    async def _predict(self, name: str, inputs: Arrays) -> tuple[ServedModel, Arrays]:
        """Batched inference on model ``name``; ErrorAnswer when disabled, missing or busy."""
        served = self.served.get(name)
        if served is None:
            raise ErrorAnswer(
                error_response(404, f"model {name!r} is not enabled (DLSERVE_MODELS)")
            )
        try:
            return served, await served.predict(inputs)
        except (ModelNotReadyError, OverloadedError) as exc:
            raise ErrorAnswer(error_response(503, str(exc), headers={"Retry-After": "1"})) from exc

    @bentoml.api(route=fraud.SPEC.route)
    async def fraud_score(self, transactions: fraud.Transactions) -> fraud.FraudScoreResponse:
        """Score 1 to 1,000 transactions: fraud probability, anomaly score, decision."""
        try:
            served, outputs = await self._predict(fraud.SPEC.name, fraud.to_arrays(transactions))
        except ErrorAnswer as answer:
            return answer.response
        threshold = served.model.metadata["decision"]["threshold"]
        results = fraud.to_results(outputs, threshold)
        return JSONResponse({"model": served.reference(), "results": results})

    async def _classify_images(
        self, files: list[bytes], locs: list[list[str | int]], k: int
    ) -> tuple[ServedModel, list[dict]]:
        """Decode (off the event loop) and classify files; ImageInputError or ErrorAnswer."""
        arrays = await asyncio.to_thread(image_api.to_arrays, files, locs)
        served, outputs = await self._predict(image_api.SPEC.name, arrays)
        return served, image_api.to_results(outputs, served.model.metadata["labels"], k)

    @bentoml.api(route=image_api.SPEC.route)
    async def image_classify(
        self, image: Path, ctx: bentoml.Context
    ) -> image_api.ImageClassifyResponse:
        """Classify one image file (multipart field ``image``); ``?k=`` sets top-k (1-10)."""
        try:
            k = image_api.parse_k(ctx.request.query_params.get("k"))
            served, results = await self._classify_images([image.read_bytes()], [["image"]], k)
        except (image_api.ImageInputError, ErrorAnswer) as exc:
            return _error_with_context(ctx, exc)
        return JSONResponse({"model": served.reference(), **results[0]})

    @bentoml.api(route=image_api.BATCH_ROUTE)
    async def image_classify_batch(
        self, images: image_api.ImageList, ctx: bentoml.Context
    ) -> image_api.ImageBatchResponse:
        """Classify 1 to 256 base64 image files, results in input order; ``?k=`` as above."""
        try:
            k = image_api.parse_k(ctx.request.query_params.get("k"))
            files = image_api.decode_base64(images)
            locs = [["images", index] for index in range(len(files))]
            served, results = await self._classify_images(files, locs, k)
        except (image_api.ImageInputError, ErrorAnswer) as exc:
            return _error_with_context(ctx, exc)
        return JSONResponse({"model": served.reference(), "results": results})

    @bentoml.task(route=batch_http.ROUTE)
    async def batch_job(
        self, file: Path, ctx: bentoml.Context, model: str = "fraud"
    ) -> dict[str, Any]:
        """Score an uploaded CSV, Parquet or JSON Lines file (task: /submit, /status, /get)."""
        job_id = getattr(ctx.request.state, "task_id", None) or uuid.uuid4().hex
        status, body = await asyncio.to_thread(batch_http.run_upload, file, model, job_id)
        ctx.response.status_code = status
        return JSONResponse(body, status)

    @bentoml.api(route=sentiment.ROUTE)
    async def sentiment_classify(
        self, texts: sentiment.Texts, model: sentiment.ModelChoice = None
    ) -> sentiment.SentimentResponse:
        """Label 1 to 256 texts positive or negative with ``model`` (default: the best)."""
        name = sentiment.STORE_NAMES[model or self.default_sentiment]
        encoder = self.text_encoders.get(name)
        # Without an encoder the model is disabled or unavailable: _predict answers why.
        arrays, truncated = encoder.encode(texts) if encoder else ({}, [])
        try:
            served, outputs = await self._predict(name, arrays)
        except ErrorAnswer as answer:
            return answer.response
        results = sentiment.to_results(outputs, truncated)
        return JSONResponse({"model": served.reference(), "results": results})


def _error_with_context(ctx: bentoml.Context, exc: Exception) -> Response:
    """The error answer of a route taking ``ctx`` (BentoML gives it ctx's status code)."""
    response = exc.response if isinstance(exc, ErrorAnswer) else image_api.error_answer(exc)
    ctx.response.status_code = response.status_code
    return response


DLServe.mount_asgi_app(v1_app, path="/v1")
# The first middleware added is the outermost: the counter also sees the 413s of the limit.
DLServe.add_asgi_middleware(
    RejectedRequestCounter,
    routes={spec.route: spec.name for spec in MODEL_SPECS}
    | {image_api.BATCH_ROUTE: image_api.SPEC.name},
)
DLServe.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
# Behind the limit (it reads the body) and inside the counter: BentoML answers 500 to some
# malformed uploads before the route runs, so the upload's structure is checked first.
DLServe.add_asgi_middleware(SingleFileUploadGuard, path=image_api.SPEC.route, field="image")
