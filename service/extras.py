"""BentoML's per-request extras (access log, OpenTelemetry tracing, request metrics) as the
``bentoml.service`` configuration that ``Settings`` asks for.

BentoML wraps every request in these middlewares (``_bentoml_impl/server/app.py``); each costs
CPU on every request (docs/BENCHMARKS.md measures them), so only the metrics that the alerts
and the autoscaler read are on by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.config import Settings
from service.paths import METRICS_PATH, PROBE_PATHS

# Never in BentoML's access log nor its request metrics (its own default: the probes and
# /metrics).
UNLOGGED_PATHS = (METRICS_PATH, *sorted(PROBE_PATHS))
# OpenTelemetry's exclude list is a regular expression searched in the URL: "." matches all.
EVERY_URL = "."


def service_config(settings: Settings, routes: Iterable[str]) -> dict[str, Any]:
    """The ``logging`` and ``tracing`` keyword arguments of ``bentoml.service`` for ``settings``.

    BentoML skips the same paths (prefixes) in its access log and its last-request timestamp
    (1.4 still counts them in its other request metrics), so with ``request_metrics`` off,
    ``routes`` get neither.
    """
    access: dict[str, Any] = {"enabled": settings.access_log}
    if not settings.request_metrics:
        access["skip_paths"] = [*UNLOGGED_PATHS, *routes]
    config: dict[str, Any] = {"logging": {"access": access}}
    if not settings.tracing:
        config["tracing"] = {"excluded_urls": [EVERY_URL]}
    return config
