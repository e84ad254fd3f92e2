"""The Open Inference Protocol (KServe V2, as Triton and KServe speak it) for every tensor model.

A tensor model is one whose ``ModelSpec.tensors`` is set (``service.area.TensorInputs``): its
area declares it, and these routes serve it with no other code.

- ``GET /v2``: server metadata (name, version, ``extensions``: ``binary_tensor_data``);
- ``GET /v2/health/live`` and ``/v2/health/ready`` (200 when every enabled model is ready);
- ``GET /v2/models/{name}[/versions/{version}]``: inputs and outputs with datatype and shape;
- ``GET /v2/models/{name}[/versions/{version}]/ready``: 200 when the model is ready
  (``ServedModel.ready``), 503 otherwise;
- ``POST /v2/models/{name}[/versions/{version}]/infer``: JSON tensors or the binary-tensor
  extension (``service.tensors``), then the data plane's ``infer_tensors``
  (``service.inference``): the same micro-batcher, metrics and errors as the model's named
  routes.

Errors are the protocol's ``{"error": message}``, rendered here from the data plane's typed
errors: 400 for a bad request (naming the input and the rule), 404 for an unknown model,
version or path, 503 (with ``Retry-After``) for a model that is not ready or a full queue.
The version is the served model-store version.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from service import registry, tensors
from service.area import ReadyModel
from service.errors import InferenceError, RequestInputError, final_error
from service.inference import CurrentPlane, DataPlane
from service.version import VERSION

SERVER = {
    "name": "dlserve",
    "version": VERSION,
    "extensions": ["binary_tensor_data"],
}
PLATFORM = "onnx_onnxv1"
ROOT = "/v2"  # every route of the protocol lies under it; its errors are {"error": message}
HEADER_LENGTH = "Inference-Header-Content-Length"
TENSOR_MODELS = registry.tensor_model_names()
INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer")


def protocol_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The protocol's error answer: ``{"error": message}``."""
    return Response(orjson.dumps({"error": message}), status, headers, "application/json")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def protocol_route(
    handler: Callable[[DataPlane, Request], Awaitable[Response]], plane: CurrentPlane
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` called with the worker's data plane, its typed errors answered in the
    protocol's shape (status, message, ``Retry-After``)."""

    async def route(request: Request) -> Response:
        try:
            return await handler(plane(), request)
        except InferenceError as exc:
            return protocol_error(exc.status, exc.summary, exc.headers)

    return route


async def server_metadata(_: DataPlane, __: Request) -> Response:
    return _json(SERVER)


async def server_live(_: DataPlane, __: Request) -> Response:
    return _json({"live": True})


def _readiness(body: dict[str, Any], ready: bool) -> Response:
    """200, or 503 with the same JSON body (not an error message: the protocol's answer)."""
    return _json(body) if ready else final_error(_json(body, 503))


async def server_ready(plane: DataPlane, _: Request) -> Response:
    ready = plane.is_ready()
    return _readiness({"ready": ready}, ready)


async def model_metadata(plane: DataPlane, request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params.get("version")
    ready = plane.tensor_version(name, version)
    if ready is None:
        reason = plane.tensor_model(name).reason
        return protocol_error(503, f"model {name!r} is not loaded: {reason}")
    return _json(
        {
            "name": ready.name,
            "versions": [ready.version],
            "platform": PLATFORM,
            "inputs": [tensors.tensor_metadata(spec) for spec in ready.metadata["inputs"]],
            "outputs": [tensors.tensor_metadata(spec) for spec in ready.metadata["outputs"]],
        }
    )


async def model_ready(plane: DataPlane, request: Request) -> Response:
    name = request.path_params["name"]
    ready = plane.tensor_version(name, request.path_params.get("version")) is not None
    return _readiness({"name": name, "ready": ready}, ready)


async def infer(plane: DataPlane, request: Request) -> Response:
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise RequestInputError(
            ["Content-Encoding"], f"{encoding!r} is not supported", "unsupported"
        )
    body = await request.body()

    def decode(ready: ReadyModel, max_rows: int) -> tensors.InferRequest:
        return tensors.parse_request(
            body,
            request.headers.get(HEADER_LENGTH),
            ready.metadata["inputs"],
            ready.model.output_names,
            max_rows,
        )

    name, version = request.path_params["name"], request.path_params.get("version")
    ready, parsed, outputs = await plane.infer_tensors(name, version, decode)
    assert parsed is not None
    answer, header_length = tensors.encode_response(ready.name, ready.version, parsed, outputs)
    if header_length is None:
        return Response(answer, media_type="application/json")
    return Response(
        answer,
        headers={HEADER_LENGTH: str(header_length)},
        media_type="application/octet-stream",
    )


# Every method a client may send: a path under /v2 that no route has is 404 whatever the method.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def not_a_route(routes: list[Route]) -> Callable[[Request], Awaitable[Response]]:
    """The answer under ``/v2`` where none of ``routes`` matches both path and method: 405
    with ``Allow`` for a route's path with another method, else 404."""

    async def answer(request: Request) -> Response:
        allowed = sorted(
            {
                method
                for route in routes
                if route.matches(request.scope)[0] is Match.PARTIAL
                for method in route.methods or ()
            }
        )
        where = f"{request.method} {request.url.path}"
        if allowed:
            return protocol_error(
                405,
                f"{where}: the route allows {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        return protocol_error(404, f"{where} is not a route of /v2")

    return answer


def counted_model(path: str) -> str | None:
    """The tensor model whose infer route ``path`` is (its rejected requests are counted under
    it), or ``None``."""
    match = INFER_PATH.fullmatch(path)
    return match["name"] if match and match["name"] in TENSOR_MODELS else None


def build_app(plane: CurrentPlane) -> Starlette:
    """The ``/v2`` routes, with full paths (mounted at ``/``, so that ``GET /v2`` is one), each
    calling the worker's data plane (``plane()``)."""
    model = f"{ROOT}/models/{{name}}"
    version = f"{ROOT}/models/{{name}}/versions/{{version}}"
    served = [
        (ROOT, server_metadata, "GET"),
        (f"{ROOT}/health/live", server_live, "GET"),
        (f"{ROOT}/health/ready", server_ready, "GET"),
        *((path, model_metadata, "GET") for path in (model, version)),
        *((f"{path}/ready", model_ready, "GET") for path in (model, version)),
        *((f"{path}/infer", infer, "POST") for path in (model, version)),
    ]
    routes = [
        Route(path, protocol_route(handler, plane), methods=[method])
        for path, handler, method in served
    ]
    fallback = Route(f"{ROOT}/{{path:path}}", not_a_route(routes), methods=ANY_METHOD)
    return Starlette(routes=[*routes, fallback])
