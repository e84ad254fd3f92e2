"""The dlserve BentoML service: every enabled model behind versioned ``/v1/`` routes.

``bentoml serve`` at the repository root starts ``DLServe`` (see ``bentofile.yaml``). Models
load in ``__init__``; a model that is missing, corrupted or denied its required provider is
reported by ``/v1/models`` and keeps ``/readyz`` at 503, while the process stays up.
"""

from __future__ import annotations

import logging

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import fraud
from service.batching import OverloadedError
from service.config import Settings
from service.errors import BodyLimitMiddleware, error_response
from service.metrics import RejectedRequestCounter
from service.served_model import ModelNotReadyError, ServedModel

log = logging.getLogger("dlserve")
SETTINGS = Settings.from_env()


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
        self.served: dict[str, ServedModel] = {}
        if "fraud" in SETTINGS.models:
            self.served["fraud"] = ServedModel(
                fraud.MODEL_TAG,
                SETTINGS,
                score_output="fraud_probability",
                check=fraud.check_feature_spec,
                route=fraud.ROUTE,
                request_schema=fraud.Transaction,
            )
        for area, served in self.served.items():
            state = f"ready on {served.model.provider}" if served.model else "UNAVAILABLE"
            log.info("area %s: model %s %s", area, served.name, state)

    def __is_ready__(self) -> bool:
        return all(served.ready for served in self.served.values())

    @bentoml.api(route=fraud.ROUTE)
    async def fraud_score(self, transactions: fraud.Transactions) -> fraud.FraudScoreResponse:
        """Score 1 to 1,000 transactions: fraud probability, anomaly score, decision."""
        served = self.served.get("fraud")
        if served is None:
            return _area_disabled("fraud")
        try:
            outputs = await served.predict(fraud.to_arrays(transactions))
        except (ModelNotReadyError, OverloadedError) as exc:
            return _unavailable(exc)
        threshold = served.model.metadata["decision"]["threshold"]
        return JSONResponse(
            {"model": served.reference(), "results": fraud.to_results(outputs, threshold)}
        )


def _area_disabled(area: str) -> Response:
    return error_response(404, f"area {area!r} is not enabled (DLSERVE_MODELS)")


def _unavailable(exc: Exception) -> Response:
    return error_response(503, str(exc), headers={"Retry-After": "1"})


DLServe.mount_asgi_app(v1_app, path="/v1")
# The first middleware added is the outermost: the counter also sees the 413s of the limit.
DLServe.add_asgi_middleware(RejectedRequestCounter, routes={fraud.ROUTE: fraud.MODEL_NAME})
DLServe.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
