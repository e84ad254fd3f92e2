"""Extra ``bentoml serve`` processes for the deploy tests, each with its own BENTOML_HOME.

BentoML keeps its per-worker metric files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and
empties that folder when a server starts: a second server over the session's BENTOML_HOME
would wipe the first one's metrics (as two pods sharing a volume there would). So each extra
server gets a home of its own whose ``models`` links to the session's model store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.local_server import LocalServer


def private_home() -> Path:
    # inside the session scratch folder (tests/conftest.py), removed with it
    home = Path(tempfile.mkdtemp(prefix="home-", dir=Path(os.environ["BENTOML_HOME"]).parent))
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    return home


def extra_server(env: dict[str, str]) -> LocalServer:
    """A LocalServer over the session's models, with metrics of its own."""
    return LocalServer(env={"BENTOML_HOME": str(private_home()), **env})
