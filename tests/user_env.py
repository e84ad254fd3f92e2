"""The operator's own model store and reports, captured before ``conftest`` points the tests at
private ones: the quality checks (``-m quality``) judge the served full-preset models there."""

from __future__ import annotations

import os

USER_ENV = {name: os.environ.get(name) for name in ("BENTOML_HOME", "DLSERVE_REPORTS")}
