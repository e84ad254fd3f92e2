"""The Open Inference Protocol (KServe V2, as Triton and KServe speak it) for every tensor model.

A tensor model is one whose ``ModelSpec.tensors`` is set (``service.area.TensorInputs``): its
area declares it, and these routes serve it with no other code.

- ``GET /v2``: server metadata (name, version, ``extensions``: ``binary_tensor_data``);
- ``GET /v2/health/live`` and ``/v2/health/ready`` (200 when every enabled model is ready);
- ``GET /v2/models/{name}[/versions/{version}]``: inputs and outputs with datatype and shape;
- ``GET /v2/models/{name}[/versions/{version}]/ready``: 200 when the model is ready
  (``ServedModel.ready``), 503 otherwise;
- ``POST /v2/models/{name}[/versions/{version}]/infer``: JSON tensors or the binary-tensor
  extension (``service.tensors``), then ``predict``, the same micro-batcher, metrics and
  errors as the model's named routes.

Errors are the protocol's ``{"error": message}``: 400 for a bad request (naming the input and
the rule), 404 for an unknown model, version or path, 503 (with ``Retry-After``) for a model
that is not ready or a full queue. The version is the served model-store version.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import bentoml
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from service import registry, tensors
from service.area import ReadyModel
from service.errors import ErrorAnswer, RequestInputError, final_error
from service.served_model import ServedModel, request_scope
from service.version import VERSION

SERVER = {
    "name": "dlserve",
    "version": VERSION,
    "extensions": ["binary_tensor_data"],
}
PLATFORM = "onnx_onnxv1"
ROOT = "/v2"  # every route of the protocol lies under it; its errors are {"error": message}
HEADER_LENGTH = "Inference-Header-Content-Length"
TENSOR_MODELS = frozenset(spec.name for spec in registry.model_specs() if spec.tensors)
INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer")


def protocol_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The protocol's error answer: ``{"error": message}``."""
    return Response(orjson.dumps({"error": message}), status, headers, "application/json")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _reshaped(answer: Response) -> Response:
    """A dlserve error answer (``{"error", "detail"}``) in the protocol's shape, keeping its
    status and ``Retry-After``."""
    try:
        message = orjson.loads(answer.body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    retry = answer.headers.get("retry-after")
    return protocol_error(
        answer.status_code,
        message if isinstance(message, str) else HTTPStatus(answer.status_code).phrase,
        {"Retry-After": retry} if retry else None,
    )


def protocol_route(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` with every refusal answered in the protocol's shape."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ErrorAnswer as answer:
            return _reshaped(answer.response)
        except RequestInputError as exc:
            where = ".".join(str(part) for part in exc.loc)
            return protocol_error(400, f"{where}: {exc}")

    return route


def _not_found(message: str) -> ErrorAnswer:
    return ErrorAnswer(protocol_error(404, message))


def _service() -> Any:
    """The running ``DLServe`` instance of this worker."""
    return bentoml.get_current_service()


def _tensor_model(request: Request) -> ServedModel:
    """The enabled tensor model named by the path; 404 otherwise."""
    name = request.path_params["name"]
    served = _service().served
    model = served.get(name)
    if model is None and name in TENSOR_MODELS:
        raise _not_found(f"model {name!r} is not enabled (DLSERVE_MODELS)")
    if model is None or model.spec.tensors is None:
        known = [m.name for m in served.values() if m.spec.tensors is not None]
        raise _not_found(f"unknown model {name!r}; the tensor models served here are {known}")
    return model


def _at_version(
    served: ServedModel, ready: ReadyModel | None, request: Request
) -> ReadyModel | None:
    """``ready`` (``None`` when no version is loaded); 404 for a version in the path that it
    is not."""
    version = request.path_params.get("version")
    if ready is not None and version is not None and version != ready.version:
        raise _not_found(
            f"model {served.name!r} has no version {version!r}; it serves {ready.version!r}"
        )
    return ready


@protocol_route
async def server_metadata(_: Request) -> Response:
    return _json(SERVER)


@protocol_route
async def server_live(_: Request) -> Response:
    return _json({"live": True})


def _readiness(body: dict[str, Any], ready: bool) -> Response:
    """200, or 503 with the same JSON body (not an error message: the protocol's answer)."""
    return _json(body) if ready else final_error(_json(body, 503))


@protocol_route
async def server_ready(_: Request) -> Response:
    ready = _service().__is_ready__()
    return _readiness({"ready": ready}, ready)


@protocol_route
async def model_metadata(request: Request) -> Response:
    served = _tensor_model(request)
    ready = _at_version(served, served.ready, request)
    if ready is None:
        return protocol_error(503, f"model {served.name!r} is not loaded: {served.reason}")
    return _json(
        {
            "name": ready.name,
            "versions": [ready.version],
            "platform": PLATFORM,
            "inputs": [tensors.tensor_metadata(spec) for spec in ready.metadata["inputs"]],
            "outputs": [tensors.tensor_metadata(spec) for spec in ready.metadata["outputs"]],
        }
    )


@protocol_route
async def model_ready(request: Request) -> Response:
    served = _tensor_model(request)
    ready = _at_version(served, served.ready, request) is not None
    return _readiness({"name": served.name, "ready": ready}, ready)


@protocol_route
async def infer(request: Request) -> Response:
    served = _tensor_model(request)
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise RequestInputError(
            ["Content-Encoding"], f"{encoding!r} is not supported", "unsupported"
        )
    with request_scope():  # the version decoded against is the one predict runs
        return await _infer(
            served, _at_version(served, served.ready_for_request(), request), request
        )


async def _infer(served: ServedModel, ready: ReadyModel | None, request: Request) -> Response:
    tensor_inputs = served.spec.tensors
    assert tensor_inputs is not None
    parsed = None
    if ready is not None:
        parsed = tensors.parse_request(
            await request.body(),
            request.headers.get(HEADER_LENGTH),
            ready.metadata["inputs"],
            ready.model.output_names,
            tensor_inputs.max_rows,
        )
        if tensor_inputs.check is not None:
            tensor_inputs.check(parsed.inputs, ready)
    # Without a ready model there is nothing to decode against: ``predict`` refuses the
    # request (503, counted as unavailable) before it reads the inputs, as for a named route.
    ready, outputs = await _service().predict(served.name, parsed.inputs if parsed else {})
    assert parsed is not None
    body, header_length = tensors.encode_response(ready.name, ready.version, parsed, outputs)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
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


def build_app() -> Starlette:
    """The ``/v2`` routes, with full paths (mounted at ``/``, so that ``GET /v2`` is one)."""
    model = f"{ROOT}/models/{{name}}"
    version = f"{ROOT}/models/{{name}}/versions/{{version}}"
    routes = [
        Route(ROOT, server_metadata, methods=["GET"]),
        Route(f"{ROOT}/health/live", server_live, methods=["GET"]),
        Route(f"{ROOT}/health/ready", server_ready, methods=["GET"]),
        *(Route(path, model_metadata, methods=["GET"]) for path in (model, version)),
        *(Route(f"{path}/ready", model_ready, methods=["GET"]) for path in (model, version)),
        *(Route(f"{path}/infer", infer, methods=["POST"]) for path in (model, version)),
    ]
    fallback = Route(f"{ROOT}/{{path:path}}", not_a_route(routes), methods=ANY_METHOD)
    return Starlette(routes=[*routes, fallback])
