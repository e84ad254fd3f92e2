"""The lean HTTP path: the hot routes answered in front of BentoML's per-request machinery, in
the same worker, on the same port.

``bentoml serve`` hands uvicorn the app its ``Service.to_asgi`` builds: Starlette's error
middleware, BentoML's request metrics, OpenTelemetry's middleware, its timeout (a task per
request), dlserve's middlewares, BentoML's context middleware, Starlette's exception middleware,
its router (some 40 routes and mounts) and BentoML's API wrapper (request context, body model,
response headers). ``install`` replaces that method on dlserve's service only: the app it
returns is ``LeanDispatch``, which sends

- ``POST /v2/models/{name}[/versions/{v}]/infer`` and
- ``POST`` to the named routes of the areas ``DLSERVE_LEAN_AREAS`` names (fraud, image, text)

to a lean stack, and every other request (and the lifespan) to BentoML's app unchanged. The
lean stack keeps what those routes' behaviour needs and nothing else:

1. ``RequestAccounting``: the request counted in the worker's ``Traffic.started`` (as the
   patched timeout middleware counts it, ``service.bentoml_compat``), BentoML's request timeout
   (504 when no answer has started after ``timeout_s``: ``service.answer_deadlines``, one timer
   for all requests), and BentoML's own request metrics, written once per turn of the loop
   (``bentoml_service_request_total``, ``..._request_duration_seconds``,
   ``..._request_in_progress`` (the autoscaler's), ``..._last_request_timestamp_seconds``:
   same names, labels and buckets, written to the same multiprocess files, so ``/metrics``,
   the alerts and the autoscaler see one series);
2. every dlserve middleware, the very classes and options BentoML's app holds (errors' shape,
   refusals counted, API keys, paced refusals, admission, read deadline, body limit, upload
   checks), but those that only answer paths of their own (``own_paths_only``: the OpenAPI
   document, the batch job's task routes);
3. the route: the V2 app's ``infer`` endpoint (``service.open_inference``, as mounted in
   BentoML; without the V2 app's own router and middlewares, which answer the other paths) or
   ``NamedRoute``: the route's own BentoML input model (same pydantic schema, strict, same
   field errors as BentoML's 400) and the route's method, with a context that holds the request.

With BentoML's access log or tracing on (``DLSERVE_ACCESS_LOG``, ``DLSERVE_TRACING``) nothing
is routed lean (``wanted``): those layers would be skipped. ``DLSERVE_LEAN_PATH=false`` turns it
off. BentoML's request metrics count every request (with ``DLSERVE_REQUEST_METRICS=false``
BentoML 1.4.40 only leaves the routes' last-request timestamp alone: so does the lean path).
Answers on the lean path carry ``x-dlserve-path: lean`` (what the tests check).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from timeit import default_timer
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.answer_deadlines import AnswerDeadlines
from service.area import Area
from service.config import Settings
from service.metrics import observe_all
from service.traffic import Traffic

log = logging.getLogger("dlserve")
LEAN_HEADER = (b"x-dlserve-path", b"lean")
V2_MODELS = "/v2/models/"
INFER = "/infer"
# the V2 infer routes' paths, as Starlette's router matches ``{name}`` and ``{version}``
V2_INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
LABEL_CACHE_LIMIT = 4096  # label children kept per metric; other paths are looked up each time


class LeanDispatch:
    """The worker's outermost ASGI app: hot routes to ``lean``, all else to ``bentoml_app``."""

    def __init__(self, bentoml_app: ASGIApp, lean: ASGIApp, named: frozenset[str]) -> None:
        self.bentoml_app = bentoml_app
        self.lean = lean
        self.named = named

    def is_hot(self, scope: Scope) -> bool:
        """A POST to a named route or to a V2 ``infer`` route."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = scope["path"]
        return path in self.named or (path.startswith(V2_MODELS) and path.endswith(INFER))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.is_hot(scope):
            await self.lean(scope, receive, send)
        else:
            await self.bentoml_app(scope, receive, send)


class BentoRequestMetrics:
    """BentoML's HTTP request metrics (``RunnerTrafficMetricsMiddleware``'s), written for the
    lean path: the same metric names, labels, buckets and multiprocess modes, in the value
    files that BentoML's ``/metrics`` collects. As BentoML does for a path in its skip list
    (the routes, with ``DLSERVE_REQUEST_METRICS=false``), ``stamp_last_request=False`` leaves
    the last-request timestamp alone and counts the rest.

    Writes are gathered per turn of the event loop: what the requests of one turn changed
    (requests in progress per path, answers per path and status with their durations, the
    last request's time) is written once, at the end of that turn (``write``, a ``call_soon``),
    in one increment per series and per histogram bucket rather than five writes of the
    multiprocess files per request. The files lag the requests by at most that turn.
    """

    def __init__(self, stamp_last_request: bool) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.context import server_context
        from prometheus_client import Counter, Gauge, Histogram

        namespace = BentoMLContainer.api_server_config.metrics.namespace.get()
        identity = ["service_name", "service_version"]
        answered = ["endpoint", *identity, "http_response_code", "runner_name"]
        # registry=None: BentoML's own instances are registered; these write the same series
        self.duration = Histogram(
            "request_duration_seconds",
            "runner RPC duration in seconds",
            answered,
            namespace=namespace,
            buckets=BentoMLContainer.duration_buckets.get(),
            registry=None,
        )
        self.total = Counter(
            "request_total",
            "Total number of runner RPC",
            answered,
            namespace=namespace,
            registry=None,
        )
        self.in_progress = Gauge(
            "request_in_progress",
            "Total number of runner RPC in progress now",
            ["endpoint", *identity, "runner_name"],
            namespace=namespace,
            multiprocess_mode="livesum",
            registry=None,
        )
        self.last_request = Gauge(
            "last_request_timestamp_seconds",
            "Timestamp of the last received request",
            [*identity, "runner_name"],
            namespace=namespace,
            registry=None,
        ).labels(
            server_context.bento_name, server_context.bento_version, server_context.service_name
        )
        self.stamp_last_request = stamp_last_request
        self._identity = (server_context.bento_name, server_context.bento_version)
        self._runner = server_context.service_name
        self._answered_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._running_children: dict[str, Any] = {}
        self._running_change: dict[str, int] = defaultdict(int)  # started minus ended, per path
        self._durations: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._last_start: float | None = None
        self._write_loop: asyncio.AbstractEventLoop | None = None  # where a write is pending

    def started(self, path: str) -> None:
        """A request on ``path`` arrived: in progress until ``ended``."""
        if self.stamp_last_request:
            self._last_start = time.time()
        self._running_change[path] += 1
        self._schedule_write()

    def ended(self, path: str) -> None:
        """The request on ``path`` that ``started`` is over (answered or not)."""
        self._running_change[path] -= 1
        self._schedule_write()

    def answered(self, path: str, status: int, seconds: float) -> None:
        """One answered request on ``path`` with ``status``, taking ``seconds``."""
        self._durations[(path, status)].append(seconds)
        self._schedule_write()

    def _schedule_write(self) -> None:
        loop = asyncio.get_running_loop()
        if self._write_loop is not loop:  # none pending on this loop (a new loop: tests)
            self._write_loop = loop
            loop.call_soon(self.write)

    def write(self) -> None:
        """Write to the metric files what changed since the last write."""
        self._write_loop = None
        if self._last_start is not None:
            self.last_request.set(self._last_start)
            self._last_start = None
        for path, change in self._running_change.items():
            if change:
                self._running_child(path).inc(change)
        self._running_change.clear()
        for (path, status), durations in self._durations.items():
            total, duration = self._answered_child(path, status)
            total.inc(len(durations))
            observe_all(duration, durations)
        self._durations.clear()

    def _running_child(self, path: str) -> Any:
        child = self._running_children.get(path)
        if child is None:
            child = self.in_progress.labels(path, *self._identity, self._runner)
            if len(self._running_children) < LABEL_CACHE_LIMIT:
                self._running_children[path] = child
        return child

    def _answered_child(self, path: str, status: int) -> tuple[Any, Any]:
        children = self._answered_children.get((path, status))
        if children is None:
            values = (path, *self._identity, str(status), self._runner)
            children = (self.total.labels(*values), self.duration.labels(*values))
            if len(self._answered_children) < LABEL_CACHE_LIMIT:
                self._answered_children[(path, status)] = children
        return children


class RequestAccounting:
    """ASGI middleware, outermost on the lean path: what BentoML's outer layers did for these
    routes (``Traffic.started``, the 504 timeout, request metrics); marks answers lean."""

    def __init__(
        self,
        app: ASGIApp,
        traffic: Traffic,
        timeout_s: float,
        metrics: Callable[[], BentoRequestMetrics],
    ) -> None:
        self.app = app
        self.traffic = traffic
        self.timeout_s = timeout_s
        self.deadlines = AnswerDeadlines(timeout_s)
        self._make_metrics = metrics
        self._metrics: BentoRequestMetrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self._metrics
        if metrics is None:  # made in the worker, once BentoML's server context is set
            metrics = self._metrics = self._make_metrics()
        path = scope["path"]
        metrics.started(path)
        start = default_timer()
        status = 0
        deadlines = self.deadlines
        deadline = deadlines.start()

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                deadlines.answered(deadline)  # as BentoML's: no timeout once the answer starts
                message["headers"] = [*message.get("headers", ()), LEAN_HEADER]
            elif not message.get("more_body", False):
                metrics.answered(path, status, max(default_timer() - start, 0))
            await send(message)

        self.traffic.started += 1
        try:
            await self.app(scope, receive, answering)
        except asyncio.CancelledError:
            if status or not deadline.expired_here():
                raise
            error = {"error": f"Not able to process the request in {self.timeout_s} seconds"}
            await JSONResponse(error, status_code=504)(scope, receive, answering)
        finally:
            deadlines.answered(deadline)
            self.traffic.started -= 1
            metrics.ended(path)


@dataclass
class AnswerState:
    """What a route sets on its context's response (``ctx.response.status_code``)."""

    status_code: int = 200


@dataclass
class LeanContext:
    """The ``ctx`` a named route gets on the lean path: the request and its answer's state."""

    request: Request
    response: AnswerState = field(default_factory=AnswerState)


@dataclass(frozen=True)
class PlaneOwner:
    """The ``self`` of a route method: what the service instance gives it (``plane``)."""

    current_plane: Callable[[], Any]

    @property
    def plane(self) -> Any:
        return self.current_plane()


class NamedRoute:
    """ASGI app answering one named route as BentoML's API wrapper does (body parsed into the
    route's input model, its field errors as BentoML's 400 body, the route's answer or its
    output model's), without BentoML's request context."""

    def __init__(self, api: Any, owner: PlaneOwner, server_header: str) -> None:
        from _bentoml_impl.serde import ALL_SERDE

        self.api = api
        self.owner = owner
        # the body's media type is checked before (JsonBodyGuard, UploadGuard): one parser
        self.serde = ALL_SERDE[api.input_spec.mime_type()]()
        self.server_header = server_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.answer(request)
        except ValidationError as exc:
            body = {
                "error": f"{exc.error_count()} validation error for {exc.title}",
                "detail": exc.errors(include_context=False, include_input=False),
            }
            response = JSONResponse(body, status_code=400)
        except BentoMLException as exc:  # as BentoML's API wrapper words it
            log.exception("%s: BentoML refused the request", scope["path"])
            response = bentoml_refusal(exc)
        except Exception:
            log.exception("%s: unexpected error", scope["path"])
            error = "An unexpected error has occurred, please check the server log."
            response = JSONResponse({"error": error}, status_code=500)
        response.headers["server"] = self.server_header
        try:
            await response(scope, receive, send)
        finally:
            await request.close()

    async def answer(self, request: Request) -> Response:
        """The route's answer to ``request`` (``ValidationError`` for a body off its schema)."""
        api = self.api
        data = await api.input_spec.from_http_request(request, self.serde)
        kwargs = {name: getattr(data, name) for name in type(data).model_fields}
        ctx = LeanContext(request)
        output = await api.func(self.owner, ctx=ctx, **kwargs)
        if isinstance(output, Response):
            return output
        response = await api.output_spec.to_http_response(output, self.serde)
        response.status_code = ctx.response.status_code
        return response


def bentoml_refusal(exc: BentoMLException) -> JSONResponse:
    """The answer BentoML's API wrapper gives to ``exc`` (1.4.40's wording and shapes)."""
    status = exc.error_code.value
    if status in (401, 403):
        body: Any = {"error": "Authorization error"}
    elif status >= 500:
        body = {"error": "An unexpected error has occurred, please check the server log."}
    else:
        body = [{"error": str(exc)}]  # BentoML sends a one-element list here
    return JSONResponse(body, status_code=status)


class V2Infer:
    """ASGI app: the V2 ``infer`` route's endpoint called straight for a path it answers (the
    path's ``name`` and ``version`` as Starlette's router gives them), other paths to the V2
    app (its 404s). An exception escaping the endpoint gets the 500 Starlette's error
    middleware gives (``ProtocolErrors`` shapes it)."""

    def __init__(self, v2_app: ASGIApp, endpoint: Callable[[Request], Awaitable[Response]]):
        self.v2_app = v2_app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = V2_INFER_PATH.fullmatch(scope["path"])
        if match is None:
            await self.v2_app(scope, receive, send)
            return
        params = match.groupdict()
        scope["path_params"] = params if params["version"] is not None else {"name": params["name"]}
        try:
            response = await self.endpoint(Request(scope, receive))
        except Exception:
            log.exception("%s: unexpected error", scope["path"])
            response = PlainTextResponse("Internal Server Error", status_code=500)
        await response(scope, receive, send)


class LeanRoutes:
    """ASGI app: the named route of the path, else the V2 ``infer`` route."""

    def __init__(self, v2_infer: ASGIApp, named: dict[str, ASGIApp]) -> None:
        self.v2_infer = v2_infer
        self.named = named

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.named.get(scope["path"])
        await (route or self.v2_infer)(scope, receive, send)


def wrap(app: ASGIApp, middlewares: Iterable[tuple[type, dict[str, Any]]]) -> ASGIApp:
    """``app`` inside ``middlewares`` (the first one outermost, as BentoML stacks them)."""
    for middleware, options in reversed(list(middlewares)):
        app = middleware(app, **options)
    return app


@dataclass(frozen=True)
class LeanPath:
    """What ``install`` needs to build a worker's lean stack."""

    service: Any  # the bentoml Service (its apis, middlewares, name and traffic timeout)
    named_apis: dict[str, str]  # route -> the service's API name
    v2_app: ASGIApp
    v2_infer: Callable[[Request], Awaitable[Response]]  # the V2 app's infer endpoint
    current_plane: Callable[[], Any]
    traffic: Traffic
    request_metrics: bool
    # middlewares that answer only paths of their own, never a hot route: left off the stack
    own_paths_only: tuple[type, ...] = ()

    def build(self) -> tuple[ASGIApp, frozenset[str]]:
        """The lean stack and the named routes it answers."""
        server = f"BentoML Service/{self.service.name}"
        owner = PlaneOwner(self.current_plane)
        named: dict[str, ASGIApp] = {
            route: NamedRoute(self.service.apis[api], owner, server)
            for route, api in self.named_apis.items()
        }
        middlewares = [m for m in self.service.middlewares if m[0] not in self.own_paths_only]
        app = wrap(LeanRoutes(V2Infer(self.v2_app, self.v2_infer), named), middlewares)
        timeout_s = self.service.config.get("traffic", {}).get("timeout", 60)
        metrics = functools.partial(BentoRequestMetrics, stamp_last_request=self.request_metrics)
        return RequestAccounting(app, self.traffic, timeout_s, metrics), frozenset(named)


def wanted(settings: Settings) -> bool:
    """Whether ``settings`` route the hot routes lean (on, and no per-request extra that only
    BentoML's stack has)."""
    return settings.lean_path and not settings.access_log and not settings.tracing


def named_routes(areas: dict[str, Area], lean_areas: Iterable[str]) -> dict[str, str]:
    """Route -> API name of the named routes of ``lean_areas`` (``DLSERVE_LEAN_AREAS``, checked
    against the declared areas by ``registry.checked_settings``)."""
    return {e.route: e.api_name for name in lean_areas for e in areas[name].endpoints}


def install(lean: LeanPath) -> None:
    """Make ``lean.service``'s ``to_asgi`` return BentoML's app behind a ``LeanDispatch``.

    BentoML's ``Service`` is a slotted attrs class: the instance's class becomes a subclass of
    it with no slots of its own (the same layout) that overrides ``to_asgi`` only.
    """
    service = lean.service

    class LeanService(type(service)):  # type: ignore[misc]
        __slots__ = ()

        def to_asgi(self, is_main: bool = True) -> ASGIApp:
            app = super().to_asgi(is_main=is_main)
            stack, named = lean.build()
            return LeanDispatch(app, stack, named)

    service.__class__ = LeanService
