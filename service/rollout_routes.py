"""The rollout routes (behind the API key, like every ``/v1`` route), for every worker of the
server (``service.rollout_fleet``): the worker that takes the call declares it, the others
apply it within a poll.

- ``POST /v1/models/{name}/rollout`` with a ``RolloutSpec`` body: declare the rollout, load
  the candidate beside the served version on this worker and start the canary or shadow; 200
  with this worker's ``rollout`` (its ``generation`` the declaration's), 400 naming the field
  and its limit, 404 for a model not served, 409 while another rollout runs on any worker (or
  the model cannot take one), 422 naming ``candidate`` when it cannot be loaded here (the
  reason; the rollout is then canceled on every worker).
- ``POST /v1/models/{name}/rollout/{action}``, ``action`` one of ``promote``, ``rollback``,
  ``cancel``: 200 with this worker's ``rollout``, ended; 409 when no rollout is running here,
  or another worker ended it first (this worker follows within a poll).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.errors import error_response, field_error
from service.inference import DataPlane
from service.rollout import CandidateError, RolloutSpec, refusal_of, start
from service.rollout_fleet import Refused
from service.served_model import ServedModel

ACTIONS = ("promote", "rollback", "cancel")


def routes(plane: Callable[[], DataPlane]) -> list[Route]:
    """The two routes, reading the worker's data plane from ``plane()``."""

    def served_or_404(request: Request) -> ServedModel | JSONResponse:
        name = request.path_params["name"]
        served = plane().served.get(name)
        if served is None:
            enabled = sorted(plane().served)
            detail = [field_error(["path", "name"], f"enabled models: {enabled}", "not_found")]
            return error_response(404, f"model {name!r} is not enabled (DLSERVE_MODELS)", detail)
        return served

    async def start_rollout(request: Request) -> JSONResponse:
        served = served_or_404(request)
        if isinstance(served, JSONResponse):
            return served
        try:
            body = json.loads(await request.body())
            spec = RolloutSpec.model_validate(body)
        except (ValueError, RecursionError) as exc:
            if not isinstance(exc, ValidationError):
                detail = [field_error(["body"], "must be a JSON object", "json_invalid")]
                return error_response(400, "the body is not JSON", detail)
            detail = [
                field_error(["body", *e["loc"]], e["msg"], e["type"])
                for e in exc.errors(include_url=False)
            ]
            return error_response(400, "invalid rollout", detail)
        refusal = refusal_of(served, spec)
        if refusal is not None:
            return error_response(409, refusal)
        fleet = plane().fleet
        try:
            generation = fleet.declare_start(served, spec)
        except Refused as refused:
            return error_response(409, str(refused))
        try:
            rollout = await asyncio.to_thread(
                start, served, spec, fleet.max_shadows, generation, fleet.claim
            )
        except (CandidateError, ValueError) as exc:  # ValueError: another rollout meanwhile
            fleet.end(served.name, generation, spec, "canceled", f"not started: {exc}")
            if isinstance(exc, ValueError):
                return error_response(409, str(exc))
            detail = [field_error(["body", "candidate"], str(exc), "not_loadable")]
            return error_response(422, f"candidate {spec.candidate!r} cannot serve", detail)
        return JSONResponse(rollout.describe())

    async def act(request: Request) -> JSONResponse:
        served = served_or_404(request)
        if isinstance(served, JSONResponse):
            return served
        action = request.path_params["action"]
        if action not in ACTIONS:
            detail = [field_error(["path", "action"], f"one of {list(ACTIONS)}", "enum")]
            return error_response(404, f"no rollout action {action!r}", detail)
        rollout = served.rollout
        if rollout is None or rollout.state not in ("canary", "shadow"):
            state = "none" if rollout is None else rollout.state
            return error_response(409, f"model {served.name!r} has no running rollout ({state})")
        if action == "promote":
            rollout.promote("promoted by a call")
        elif action == "rollback":
            rollout.rollback("rolled back by a call")
        else:
            rollout.cancel()
        if rollout.running:  # the claim was refused: another worker ended it first
            return error_response(
                409, f"model {served.name!r}: another worker ended the rollout first; it follows"
            )
        return JSONResponse(rollout.describe())

    return [
        Route("/models/{name}/rollout", start_rollout, methods=["POST"]),
        Route("/models/{name}/rollout/{action}", act, methods=["POST"]),
    ]
