"""Which models a background ``python -m training.ensure`` is training, for the service to show.

``ensure`` writes a small JSON file beside the BentoML model store it trains into
(``<BENTOML_HOME, symlinks resolved>/dlserve-training.json``): its process id, the model being
trained and those waiting. The service reads it for a model that is not in the store yet, so
``/v1/models`` says ``training`` instead of ``unavailable``. A file whose process is gone is
ignored (a stopped or crashed training is not "training").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

STATUS_FILE = "dlserve-training.json"


def status_path() -> Path:
    """The status file of the model store of ``BENTOML_HOME`` (default ``~/bentoml``)."""
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    return (home / "models").resolve().parent / STATUS_FILE


def write_status(training: list[str], waiting: list[str]) -> None:
    """Record that this process trains ``training`` now and ``waiting`` later (atomic)."""
    path = status_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"pid": os.getpid(), "training": training, "waiting": waiting}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(body))
    os.replace(temporary, path)


def clear_status() -> None:
    """Remove the status file (training finished or stopped)."""
    status_path().unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def training_state(name: str) -> str | None:
    """``"training"`` or ``"waiting"`` when a live ``ensure`` has model ``name`` in hand, else
    ``None`` (no file, an unreadable one, or its process is gone)."""
    try:
        status = json.loads(status_path().read_text())
        pid = int(status["pid"])
        training, waiting = list(status["training"]), list(status["waiting"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    if name in training:
        return "training"
    return "waiting" if name in waiting else None
