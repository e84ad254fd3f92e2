"""The paths every middleware treats apart, declared once.

Probes (``/livez``, ``/readyz``, ``/healthz`` and the Open Inference Protocol's
``/v2/health/*``) are never counted nor refused by the admission limit and never need a key;
``/metrics`` is never counted (it needs a key only with ``DLSERVE_PROTECT_METRICS``); the
documents that describe the API and the try-it page's files (``/ui``, ``service/try_page.py``;
no data: the API calls the page makes carry the key) never need a key and are never counted
either.
"""

from __future__ import annotations

PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready"})
METRICS_PATH = "/metrics"
UI_ROOT = "/ui"  # the try-it page; its files under UI_ROOT + "/"
DOCUMENT_PATHS = frozenset({"/docs.json", "/schema.json", "/", UI_ROOT})
DOCUMENT_PREFIXES = ("/static_content/", "/assets/", UI_ROOT + "/")

# Never need an API key (``/metrics`` is added unless protected).
OPEN_PATHS = PROBE_PATHS | DOCUMENT_PATHS
# Never counted nor refused by the admission limit: they must answer when the worker is busy.
UNCOUNTED_PATHS = OPEN_PATHS | {METRICS_PATH}


def uncounted(path: str) -> bool:
    """Whether the admission limit lets ``path`` through without counting it."""
    return path in UNCOUNTED_PATHS or path.startswith(DOCUMENT_PREFIXES)
