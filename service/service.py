"""The dlserve BentoML service: every declared area's routes, models and batch jobs.

``bentoml serve`` at the repository root starts ``DLServe`` (see ``bentofile.yaml``). Nothing
here names an area: the routes, the models loaded, the models a Bento packs and the metrics'
route map all come from ``service.registry`` (``service/areas/*.py`` and
``DLSERVE_AREA_MODULES``). Models load in ``__init__``; a model that fails to load for any
reason (missing, still training, corrupted, refused by ONNX Runtime or its check, denied its
required provider) is reported by ``/v1/models`` and keeps ``/readyz`` at 503 while the process
and the other models serve; new versions are loaded while serving (``ModelWatcher``, and
``POST /v1/models/{name}/load``); the routes of areas that ``DLSERVE_MODELS`` leaves out answer
404.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.model_store import stored_model_exists
from service import (
    auth,
    bentoml_compat,
    lean_path,
    open_inference,
    read_deadline,
    registry,
    rollout_routes,
    try_page,
    uploads,
)
from service.abandon import ClientGoneError
from service.admission import AdmissionGate, AdmissionLimit
from service.area import Endpoint
from service.batch import http as batch_http
from service.batch.tasks import BatchTaskRoutes, document_cancel
from service.disconnects import BodyBeforeApp
from service.errors import (
    BodyLimitMiddleware,
    ErrorAnswer,
    InferenceError,
    ProtocolErrors,
    error_response,
    field_error,
    message_only,
)
from service.extras import service_config
from service.inference import CurrentPlane, DataPlane
from service.logs import configure_logging
from service.metrics import CLIENT_DISCONNECTS, RejectedRequestCounter, served_versions
from service.model_watcher import ModelWatcher
from service.multipart_guard import JsonBodyGuard, UploadForm, UploadGuard
from service.openapi import OpenAPIDocument, openapi_document
from service.openapi_mounted import mounted_paths
from service.payload_log import writer as payload_writer
from service.payload_log.middleware import PayloadLog
from service.refusal_pacing import PacedRefusals
from service.routing import RolloutKeys
from service.served_model import request_scope
from service.shutdown import GracefulShutdown
from service.streaming import EventStreamResponse
from service.strict_input import strict_input
from service.traffic import Traffic

log = logging.getLogger("dlserve")
SETTINGS = registry.settings_from_env()  # the settings, checked against the declared areas
AREAS = registry.all_areas(SETTINGS.area_modules)
ENDPOINTS = [endpoint for area in AREAS.values() for endpoint in area.endpoints]
STEPWISE = {spec.name for spec in registry.model_specs(SETTINGS.models) if spec.stepwise}
STEPWISE_ROUTES = {e.route: e.metric_model for e in ENDPOINTS if STEPWISE & set(e.models)}
BATCH_MODEL_DEFAULT = next((area.name for area in AREAS.values() if area.batch), "")
API_KEYS = auth.configured_keys(SETTINGS)  # a key file that cannot be read stops the start
TRAFFIC = Traffic()  # this worker's request accounting (service/traffic.py)
bentoml_compat.install(TRAFFIC)  # BentoML's request timeout, without its leak; counts requests
PLANE = CurrentPlane()  # this worker's data plane, once __init__ has loaded it


class DLServeBase:
    """Loads the enabled areas' models once per worker into its data plane
    (``service.inference.DataPlane``), which every route calls.

    The routes are attached from the registry below; this class holds what they share.
    """

    def __init__(self) -> None:
        configure_logging(SETTINGS.log_level, SETTINGS.log_format)
        log.info("settings: %s", SETTINGS.public())
        self.plane = DataPlane.load(SETTINGS, TRAFFIC, alone=TRAFFIC.alone)
        PLANE.set(self.plane)
        for served in self.plane.served.values():
            state = f"ready on {served.ready.model.provider}" if served.ready else served.state
            log.info("model %s: %s", served.name, state)
        if SETTINGS.model_poll_s > 0:
            self.watcher = ModelWatcher(self.plane.served.values(), SETTINGS.model_poll_s).start()
        shutdown = GracefulShutdown(TRAFFIC, SETTINGS.shutdown_delay_s, SETTINGS.shutdown_grace_s)
        if shutdown.install():
            log.info("SIGTERM drains this worker (up to %ss)", SETTINGS.shutdown_grace_s)
        log.info("access control: %s", f"{len(API_KEYS)} API keys" if API_KEYS else "none")
        # What start-up made (BentoML, the models) lives as long as the worker: keep it out of
        # the garbage collector's full passes, which walk it all and stall every request for
        # tens of ms (the p99 at concurrency 16; docs/BENCHMARKS.md).
        gc.freeze()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """The Open Inference Protocol over gRPC (``service/grpc_api/``) on this worker's data
        plane, on ``DLSERVE_GRPC_PORT`` (0: none)."""
        self.grpc = None
        if SETTINGS.grpc_port:
            # Imported only here: its stubs and Triton's client's share message names in
            # protobuf's default pool (service/grpc_api/__init__.py).
            from service.grpc_api import server as grpc_server

            self.grpc = await grpc_server.start(self.plane, SETTINGS, API_KEYS)
            log.info("Open Inference Protocol over gRPC on port %d", SETTINGS.grpc_port)

    @bentoml.on_startup
    async def watch_rollouts(self) -> None:
        """Apply the rollout transitions any worker of this server declares, on this worker's
        event loop (``service/rollout_fleet.py``)."""
        self.rollouts = asyncio.get_running_loop().create_task(self.plane.fleet.watch())

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        """Let this worker's gRPC calls in flight finish (within the grace period), then stop."""
        if self.grpc is not None:
            await self.grpc.stop(SETTINGS.shutdown_grace_s)

    def __is_ready__(self) -> bool:
        """Every enabled model is ready and the worker is not draining (after SIGTERM)."""
        return self.plane.is_ready()

    @bentoml.task(route=batch_http.ROUTE)
    async def batch_job(
        self, file: Path, ctx: bentoml.Context, model: str = BATCH_MODEL_DEFAULT
    ) -> dict[str, Any]:
        """Score an uploaded CSV, Parquet or JSON Lines file (task: /submit, /status, /get,
        /retry, /cancel; dlserve answers those, see service/batch/tasks.py)."""
        job_id = uuid.uuid4().hex
        status, body = await asyncio.to_thread(
            batch_http.run_upload, file, model, job_id, self.plane
        )
        ctx.response.status_code = status
        return JSONResponse(body, status)


def route_method(endpoint: Endpoint) -> Callable[..., Any]:
    """A BentoML API method for ``endpoint``: the handler's typed parameters (its schema; an
    ``UploadedFile`` as a file), a ``ctx``, errors turned into answers and async iterators into
    server-sent events."""
    handler = endpoint.handler
    signature = inspect.signature(handler)
    self_param, *fields = signature.parameters.values()
    files = uploads.in_memory_fields(handler)
    fields = [uploads.as_file(field) if field.name in files else field for field in fields]
    passes_ctx = "ctx" in signature.parameters
    if not passes_ctx:
        fields.append(
            inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=bentoml.Context)
        )

    async def route(self: DLServeBase, ctx: bentoml.Context, **kwargs: Any) -> Any:
        try:
            with request_scope():  # ready() and predict() see the same version
                extra = {"ctx": ctx} if passes_ctx else {}
                result = await handler(self.plane, **kwargs, **extra)
        except ErrorAnswer as answer:
            result = answer.response
        except InferenceError as exc:
            if isinstance(exc, ClientGoneError):
                CLIENT_DISCONNECTS.inc()
                log.info("%s: the client left; its work was abandoned", endpoint.route)
            result = exc.answer(endpoint.errors)  # in the route's protocol's shape, once
        if not isinstance(result, Response) and hasattr(result, "__aiter__"):
            result = EventStreamResponse(result)
        if isinstance(result, Response):  # BentoML answers with ctx's status code
            ctx.response.status_code = result.status_code
        return result

    route.__signature__ = signature.replace(parameters=[self_param, *fields])  # type: ignore[attr-defined]
    route.__name__ = route.__qualname__ = endpoint.api_name
    route.__module__ = handler.__module__  # BentoML reads the annotations in that namespace
    route.__doc__ = handler.__doc__
    return route


def build_service_class() -> type[DLServeBase]:
    """``DLServeBase`` with one API method per endpoint and a ``BentoModel`` per stored model
    of the enabled areas (what ``bentoml build`` packs)."""
    namespace: dict[str, Any] = {"__module__": __name__, "__doc__": DLServeBase.__doc__}
    for endpoint in ENDPOINTS:
        method = route_method(endpoint)
        spec = strict_input(bentoml.api(route=endpoint.route)(method).input_spec)
        files = uploads.in_memory_fields(endpoint.handler)
        if files:
            spec = uploads.in_memory_input(spec, files)
        namespace[endpoint.api_name] = bentoml.api(route=endpoint.route, input_spec=spec)(method)
    for spec in registry.model_specs(SETTINGS.models):
        # BentoML resolves every declared model before serving and fails on a missing one;
        # a missing model is reported as unavailable by ServedModel instead.
        if stored_model_exists(spec.tag):
            namespace[f"stored_{spec.name.replace('-', '_')}"] = bentoml.models.BentoModel(spec.tag)
        else:
            log.warning("model %s is not in the store: it will be unavailable", spec.tag)
    return type("DLServe", (DLServeBase,), namespace)


DLServe = bentoml.service(
    name="dlserve",
    workers=SETTINGS.workers,
    traffic={"timeout": 60},
    http={"cors": {"enabled": False}},
    **service_config(SETTINGS, (endpoint.route for endpoint in ENDPOINTS)),
)(build_service_class())


def route_descriptions() -> dict[str, list[dict[str, Any]]]:
    """Per model: each route that answers for it, with its content type and request schema
    (from the same input specs BentoML validates against and puts in ``/docs.json``)."""
    described: dict[str, list[dict[str, Any]]] = {}
    for endpoint in ENDPOINTS:
        spec = DLServe.apis[endpoint.api_name].input_spec
        entry = {
            "route": endpoint.route,
            "content_type": spec.mime_type(),
            "request_schema": spec.model_json_schema(),
        }
        for model in endpoint.models:
            described.setdefault(model, []).append(entry)
    batch_spec = DLServe.apis["batch_job"].input_spec
    for adapter in registry.batch_adapters():
        described.setdefault(adapter.model, []).append(
            {
                "route": f"{batch_http.ROUTE}/submit",
                "content_type": batch_spec.mime_type(),
                "request_schema": batch_spec.model_json_schema(),
                "batch_model": adapter.model,
            }
        )
    return described


ROUTES = route_descriptions()
STARTED = int(time.time())


async def list_models(_: Request) -> JSONResponse:
    """``GET /v1/models``: every enabled model, loaded or not, with its provider, routes and the
    version each live worker serves (``workers``: pid -> version);
    ``object``/``data`` repeat the names in OpenAI's list shape (``client.models.list()``)."""
    served = list(PLANE().served.values())
    listed = [
        {"id": m.name, "object": "model", "created": STARTED, "owned_by": "dlserve"} for m in served
    ]
    workers = await asyncio.to_thread(served_versions)
    models = [m.describe(ROUTES[m.name]) | {"workers": workers.get(m.name, {})} for m in served]
    return JSONResponse({"models": models, "object": "list", "data": listed})


async def load_model_now(request: Request) -> JSONResponse:
    """``POST /v1/models/{name}/load``: load the model's wanted version (store's latest, or the
    pinned one) in this worker now, retrying one that failed before; other workers follow at
    their next poll. 200 with the model's entry when it serves that version, else 503 with the
    reason (the served version, if any, keeps serving)."""
    name = request.path_params["name"]
    enabled = PLANE().served
    served = enabled.get(name)
    if served is None:
        detail = [field_error(["path", "name"], f"enabled models: {sorted(enabled)}", "not_found")]
        return error_response(404, f"model {name!r} is not enabled (DLSERVE_MODELS)", detail)
    attempt = await asyncio.to_thread(served.refresh, True)
    failed = attempt is not None and attempt.outcome == "failed"
    if failed or served.ready is None:
        reason = attempt.reason if failed and attempt is not None else served.reason
        return error_response(503, str(reason), headers={"Retry-After": "1"})
    return JSONResponse(served.describe(ROUTES[name]))


def body_guards() -> tuple[dict[str, UploadForm], frozenset[str]]:
    """The form of every multipart route (batch job submission included; in memory for
    ``UploadedFile`` parameters) and the JSON routes."""
    forms: dict[str, UploadForm] = {}
    json_routes = set()
    batch_spec = DLServe.apis["batch_job"].input_spec
    routed = [
        (e.route, DLServe.apis[e.api_name].input_spec, bool(uploads.in_memory_fields(e.handler)))
        for e in ENDPOINTS
    ]
    routed += [
        (batch_http.ROUTE, batch_spec, False),
        (f"{batch_http.ROUTE}/submit", batch_spec, False),
    ]
    for route, spec, in_memory in routed:
        if spec.mime_type() == "multipart/form-data":
            files = tuple(spec.multipart_fields)
            values = tuple(name for name in spec.model_fields if name not in files)
            forms[route] = UploadForm(files, values, in_memory)
        else:
            json_routes.add(route)
    return forms, frozenset(json_routes)


def counted_model(endpoint: Endpoint) -> Callable[[bytes], str]:
    """The model a request body is counted under on ``endpoint`` (``Endpoint.counted_as``)."""
    counted_as = endpoint.counted_as
    if counted_as is None:
        return lambda body: endpoint.models[0]

    def model_of(body: bytes) -> str:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # not JSON (a form, a truncated body), too deep
            parsed = None
        return counted_as(PLANE(), parsed if isinstance(parsed, dict) else None)

    return model_of


def dlserve_openapi() -> dict[str, Any]:
    """The OpenAPI document: BentoML's, with the answers dlserve really sends."""
    protocol_errors = {e.route: e.error_schema for e in ENDPOINTS if e.error_schema is not None}
    streams = frozenset(STEPWISE_ROUTES)
    query = {e.route: e.query for e in ENDPOINTS if e.query}
    enabled = list(registry.model_specs(SETTINGS.models))
    mounted = mounted_paths(
        [spec.name for spec in enabled],
        [spec.name for spec in enabled if spec.tensors is not None],
        list(batch_http.FILES),
    )
    document = openapi_document(
        DLServe.openapi_spec.asdict(),
        protocol_errors,
        streams,
        query,
        mounted,
        auth.open_paths(SETTINGS) if API_KEYS else None,
    )
    return document_cancel(document)


v1_app = Starlette(
    routes=[
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{name}/load", load_model_now, methods=["POST"]),
        *rollout_routes.routes(PLANE),
        Route("/batch/jobs/{job_id}/{name}", batch_http.download, methods=["GET"]),
    ]
)
DLServe.mount_asgi_app(v1_app, path="/v1")
V2_APP = open_inference.build_app(PLANE)
DLServe.mount_asgi_app(V2_APP, path="/")  # its routes only (PassiveMount)
DLServe.mount_asgi_app(try_page.build_app(), path="/")  # /ui: the try-it page, its files only
# The first middleware added is the outermost. Each request's rollout key and the record of the
# versions that served it (service/routing.py), which the payload log reads once answered.
DLServe.add_asgi_middleware(RolloutKeys, header=SETTINGS.rollout_key_header)
# The payload log (off unless DLSERVE_PAYLOAD_LOG_DIR is set) records requests and answers as
# the client sends and gets them.
DLServe.add_asgi_middleware(
    PayloadLog,
    writer=payload_writer.from_settings(SETTINGS),
    routes={e.route: e.metric_model for e in ENDPOINTS if e.models},
    model_of_path=open_inference.counted_model,
    share=SETTINGS.payload_log_share,
    max_bytes=SETTINGS.payload_log_max_record_bytes,
)
# Every error gets dlserve's shape (routes of other protocols theirs), and the counter also sees
# the 401s of the key check and the 413s of the limit.
DLServe.add_asgi_middleware(
    ProtocolErrors,
    routes={e.route: e.errors for e in ENDPOINTS if e.errors is not None},
    prefixes={open_inference.ROOT: message_only},
)
DLServe.add_asgi_middleware(
    RejectedRequestCounter,
    routes={e.route: counted_model(e) for e in ENDPOINTS},
    model_of_path=open_inference.counted_model,
)
# Every path but the open ones (probes, docs, /metrics unless protected) needs a key when keys
# are set: routes added later are guarded without being listed here.
DLServe.add_asgi_middleware(auth.ApiKeyGuard, keys=API_KEYS, open_paths=auth.open_paths(SETTINGS))
# Admission: refused at once while the worker is full, before the body is read (a refusal
# under the route's model; a plug-in route without a model is not counted); counted only once
# the body has arrived, within the read deadline, so slow bodies hold no place.
# Stepwise routes are bounded by their step scheduler instead (429 beyond, as OpenAI's clients
# expect), which the generic 503 would otherwise pre-empt; the gate answers that 429 while the
# scheduler's queue is full, before the body is parsed.
ADMISSION = {
    "limit": SETTINGS.max_concurrent_requests,
    "traffic": TRAFFIC,
    "routes": {e.route: e.metric_model for e in ENDPOINTS if e.models},
    "self_bounded": STEPWISE_ROUTES,
}
# Every refusal (503, 429) waits DLSERVE_REFUSAL_DELAY_MS: clients retrying at once cannot make
# refusals the worker's main work.
DLServe.add_asgi_middleware(PacedRefusals, delay_s=SETTINGS.refusal_delay_ms / 1000)
DLServe.add_asgi_middleware(AdmissionGate, **ADMISSION)
DLServe.add_asgi_middleware(
    read_deadline.BodyReadDeadline, timeout_s=SETTINGS.request_read_timeout_s
)
read_deadline.install_head_deadline(SETTINGS.request_read_timeout_s)
DLServe.add_asgi_middleware(BodyLimitMiddleware, max_bytes=SETTINGS.max_body_bytes)
# Behind the limit: a client that leaves mid-body never reaches BentoML (which would log a
# traceback and record a 500).
DLServe.add_asgi_middleware(BodyBeforeApp)
DLServe.add_asgi_middleware(AdmissionLimit, **ADMISSION)
# Behind the limit (it reads the body) and inside the counter: BentoML answers 500 to some
# malformed bodies before the route runs, so a body's media type and an upload's structure are
# checked first.
UPLOAD_FORMS, JSON_ROUTES = body_guards()
DLServe.add_asgi_middleware(OpenAPIDocument, build=dlserve_openapi)
DLServe.add_asgi_middleware(UploadGuard, forms=UPLOAD_FORMS)
DLServe.add_asgi_middleware(JsonBodyGuard, paths=JSON_ROUTES)
# Innermost, behind the upload's checks: the batch job task routes, answered by dlserve with its
# own job records rather than BentoML's task store (see service/batch/tasks.py).
DLServe.add_asgi_middleware(BatchTaskRoutes, served=PLANE, default_model=BATCH_MODEL_DEFAULT)
# Last, once every middleware is added: the hot routes (V2 infer, the fraud, image and
# completions routes) are answered in front of BentoML's per-request layers, through the same
# middlewares (service/lean_path.py).
if lean_path.wanted(SETTINGS):
    lean_path.install(
        lean_path.LeanPath(
            service=DLServe,
            named_apis=lean_path.named_routes(AREAS, SETTINGS.lean_areas),
            v2_app=V2_APP,
            v2_infer=open_inference.protocol_route(open_inference.infer, PLANE),
            current_plane=PLANE,
            traffic=TRAFFIC,
            request_metrics=SETTINGS.request_metrics,
            own_paths_only=(OpenAPIDocument, BatchTaskRoutes),
        )
    )
