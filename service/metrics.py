"""Prometheus metrics, declared once at module level so ``/metrics`` shows them for every worker.

Only Counter, Histogram and Gauge: Info and Enum do not work in multiprocess mode.
"""

from __future__ import annotations

import collections
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREDICTIONS = Counter(
    "dlserve_predictions_total",
    "Prediction requests by model and outcome: ok, rejected (4xx), unavailable (model not "
    "loaded), overloaded (queue full or too many requests at once), error.",
    ["model", "outcome"],
)
INFERENCE_SECONDS = Histogram(
    "dlserve_inference_seconds",
    "Seconds per ONNX Runtime call (one micro-batch), by model.",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_ROWS = Histogram(
    "dlserve_batch_rows",
    "Rows per ONNX Runtime call after micro-batching, by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
SCORE_NAME = "dlserve_score"
SCORE_HELP = "Distribution of each model's headline score (a drift signal)."
# Evenly spaced: for a score spread over [0, 1]. A model whose scores crowd one end declares
# its own (``ModelSpec.score_buckets``).
LINEAR_SCORE_BUCKETS = tuple(float(b) for b in np.round(np.linspace(0.05, 1.0, 20), 2))
MODEL_INFO = Gauge(
    "dlserve_model_info",
    "1 for each served model version, labelled with its name, version and execution provider; "
    "0 once a worker has swapped it for another version.",
    ["model", "version", "provider"],
    multiprocess_mode="max",
)
MODEL_PRECISION = Gauge(
    "dlserve_model_precision",
    "1 for each served model version, labelled with its numeric precision (fp32, int8; "
    "DLSERVE_PRECISION chooses it); 0 once a worker has swapped it for another version.",
    ["model", "version", "precision"],
    multiprocess_mode="max",
)
WORKER_MODEL_VERSION_NAME = "dlserve_worker_model_version"
WORKER_MODEL_VERSION = Gauge(
    WORKER_MODEL_VERSION_NAME,
    "1 for the version of each model a live worker serves (per worker: label pid).",
    ["model", "version"],
    multiprocess_mode="liveall",
)
MODEL_LOADS = Counter(
    "dlserve_model_loads_total",
    "Attempts to load a model version (at start, by polling or by the load route), by model "
    "and outcome: ok (served from then on) or failed (not served; /v1/models says why).",
    ["model", "outcome"],
)
MODEL_LOAD_SECONDS = Histogram(
    "dlserve_model_load_seconds",
    "Seconds to read, verify, open, warm up, check and prepare a model version, by model.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

REQUESTS_RUNNING = Gauge(
    "dlserve_num_requests_running",
    "Requests of a stepwise model advancing together at each step, by model (as vLLM's).",
    ["model"],
    multiprocess_mode="livesum",
)
REQUESTS_WAITING = Gauge(
    "dlserve_num_requests_waiting",
    "Requests of a stepwise model waiting for a place among the running ones, by model.",
    ["model"],
    multiprocess_mode="livesum",
)
CLIENT_DISCONNECTS = Counter(
    "dlserve_client_disconnects_total",
    "Requests whose client left before sending the whole body (answered 499, never run).",
)
IMAGE_PIXELS_DECODED = Counter(
    "dlserve_image_pixels_decoded_total",
    "Pixels of uploaded image files decoded (image routes and batch jobs): the decoding work "
    "done, which the per-request pixel budget bounds.",
)
SLOW_BODIES = Counter(
    "dlserve_slow_bodies_total",
    "Requests whose body did not arrive within DLSERVE_REQUEST_READ_TIMEOUT_S of their head "
    "(answered 408, never run).",
)


def served_versions() -> dict[str, dict[str, str]]:
    """Model -> {worker pid: version it serves}, for every live worker of this server (this
    process alone outside ``bentoml serve``'s multiprocess metrics)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)
        metrics = registry.collect()
    else:
        metrics = WORKER_MODEL_VERSION.collect()
    served: dict[str, dict[str, str]] = defaultdict(dict)
    for metric in metrics:
        if metric.name != WORKER_MODEL_VERSION_NAME:
            continue
        for sample in metric.samples:
            if sample.value == 1:
                pid = sample.labels.get("pid", str(os.getpid()))
                served[sample.labels["model"]][pid] = sample.labels["version"]
    return dict(served)


_score_histograms: dict[str, Histogram] = {}
FEW_SCORES = 3


def score_histogram(model: str, buckets: tuple[float, ...]) -> Histogram:
    """``dlserve_score{model}`` with this model's ``buckets`` (one histogram per model, as each
    model's scores crowd a different range; the first call for a model fixes its buckets).

    Not registered in a registry (one registry refuses a name twice): BentoML serves
    ``/metrics`` from the multiprocess files, where every model's series meet under one name.
    """
    histogram = _score_histograms.get(model)
    if histogram is None:
        histogram = Histogram(
            SCORE_NAME, SCORE_HELP, ["model"], buckets=buckets, registry=None
        ).labels(model=model)
        _score_histograms[model] = histogram
    return histogram


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """Add ``values`` to ``histogram`` in pure Python: one increment per bucket they fall in
    and one of the sum, the same counts and sum as one ``observe`` each (which writes two
    values each). For a few values; ``observe_scores`` counts many with numpy."""
    if len(values) == 1:
        histogram.observe(values[0])
        return
    buckets = collections.Counter(bisect_left(histogram._upper_bounds, v) for v in values)
    for index, count in buckets.items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(values))


def observe_scores(histogram: Histogram, scores: np.ndarray) -> None:
    """Add a batch of scores to ``histogram`` in one pass: count them per bucket with numpy,
    then one increment per non-empty bucket (``Histogram.observe`` per score costs ~1.6 µs each:
    more than the model for a 100-row fraud request). Same counts and sum as one ``observe``
    per score."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size <= FEW_SCORES:  # numpy's fixed cost (~5 µs) is more than a few observes
        observe_all(histogram, values.tolist())
        return
    bounds = np.asarray(histogram._upper_bounds)  # ends with +Inf
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


class RejectedRequestCounter:
    """ASGI middleware: count the answers a route's code does not count itself: a 4xx as
    ``outcome="rejected"`` (but 429, counted as ``overloaded`` where it is decided, and 499, a
    client that left: ``dlserve_client_disconnects_total``) and a 500 as ``error``. Validation
    and framework failures happen outside a route's code, hence here.

    ``routes`` maps a route path to a function of the request's body (as received) that names
    the model to count under; the body is joined only for a counted answer. ``model_of_path``
    names the model of a path with parameters (``/v2/models/{name}/infer``), or ``None``.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: dict[str, Callable[[bytes], str]],
        model_of_path: Callable[[str], str | None] = lambda path: None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.model_of_path = model_of_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else None
        model_of = None if path is None else self.routes.get(path)
        named = None if path is None or model_of is not None else self.model_of_path(path)
        if named is not None:
            model_of = lambda body: named  # noqa: E731 (the path names the model)
        if model_of is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome = _uncounted_outcome(message["status"])
                if outcome is not None:
                    PREDICTIONS.labels(model=model_of(b"".join(chunks)), outcome=outcome).inc()
            await send(message)

        await self.app(scope, recording_receive, send_and_count)


def _uncounted_outcome(status: int) -> str | None:
    if status == 500:
        return "error"
    if 400 <= status < 500 and status not in (429, 499):
        return "rejected"
    return None
