"""The dlserve BentoML service: every enabled model behind versioned ``/v1/`` routes.

``bentoml serve`` at the repository root starts ``DLServe`` (see ``bentofile.yaml``). Models
load in ``__init__``; a model that is missing, corrupted or denied its required provider is
reported by ``/v1/models`` and keeps ``/readyz`` at 503, while the process stays up.

To serve a new model: describe it with a ``ModelSpec`` in its area module, add the spec to
``MODEL_SPECS`` and write its route below (validate with pydantic, build arrays, call
``self._predict``, shape the answer).
"""

from __future__ import annotations

import logging

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import fraud
from service.batching import Arrays, OverloadedError
from service.config import Settings
from service.errors import BodyLimitMiddleware, error_response
from service.metrics import RejectedRequestCounter
from service.served_model import ModelNotReadyError, ModelSpec, ServedModel

log = logging.getLogger("dlserve")
SETTINGS = Settings.from_env()
MODEL_SPECS: tuple[ModelSpec, ...] = (fraud.SPEC,)


class ErrorAnswer(Exception):
    """Stops a route with a ready-made error response."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def list_models(_: Request) -> JSONResponse:
    """``GET /v1/models``: every enabled model, loaded or not, with its provider and schema."""
    service = bentoml.get_current_service()
    return JSONResponse({"models": [m.describe() for m in service.served.values()]})


v1_app = Starlette(routes=[Route("/models", list_models, methods=["GET"])])


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


DLServe.mount_asgi_app(v1_app, path="/v1")
# The first middleware added is the outermost: the counter also sees the 413s of the limit.
DLServe.add_asgi_middleware(
    RejectedRequestCounter, routes={spec.route: spec.name for spec in MODEL_SPECS}
)
DLServe.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
