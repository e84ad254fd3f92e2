"""Register an exported model in the BentoML model store with its metadata file."""

from __future__ import annotations

import json
import platform
import shutil
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import bentoml

from core.model_store import METADATA_FILE, sha256_file
from training.reports import git_commit

ONNX_FILE = "model.onnx"
_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the exported file (installed ones only)."""
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def register_model(
    name: str, onnx_path: Path, metadata: dict[str, Any], extra_files: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """Store ``onnx_path`` (and ``extra_files``) under ``name`` with a completed metadata file.

    Fills in ``name``, ``version`` (the store's tag version), ``onnx_file``, ``sha256``,
    ``libraries``, ``created_at`` and ``git_commit``; returns the metadata as stored.
    """
    labels = {"task": metadata["task"], "project": "dlserve"}
    with bentoml.models.create(name, labels=labels, metadata={"task": metadata["task"]}) as model:
        root = Path(model.path)
        shutil.copyfile(onnx_path, root / ONNX_FILE)
        for extra in extra_files:
            shutil.copyfile(extra, root / extra.name)
        stored = {
            **metadata,
            "name": name,
            "version": model.tag.version,
            "onnx_file": ONNX_FILE,
            "sha256": sha256_file(root / ONNX_FILE),
            "libraries": library_versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
        }
        (root / METADATA_FILE).write_text(json.dumps(stored, indent=2))
    return stored
