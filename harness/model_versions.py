"""Copies of stored model versions under new versions, as a registration would make them: for
tests and benches that serve a second version of a model beside its first (loading while
serving, rollouts)."""

from __future__ import annotations

import json
import secrets
import shutil
import string
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

Alter = Callable[[Path], None]


def store_of(home: Path) -> Path:
    """The model folder of the BentoML home ``home``."""
    return home / "models"


def new_version(
    store: Path, name: str, alter: Alter | None = None, source: Path | None = None
) -> str:
    """Copy ``source`` (a stored version's folder; default ``name``'s latest in ``store``) to
    a new version, apply ``alter`` to the copy's folder, then point ``latest`` at it (the order
    BentoML's own registration keeps); return the new version."""
    folder = store / name
    source = source or folder / (folder / "latest").read_text().strip()
    version = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(16))
    target = folder / version
    shutil.copytree(source, target)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["version"] = version
    info["creation_time"] = datetime.now(UTC).isoformat()
    (target / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["version"] = version
    (target / "metadata.json").write_text(json.dumps(metadata, indent=2))
    if alter is not None:
        alter(target)
    (folder / "latest").write_text(version)
    return version


def copy_store(source: Path, target: Path, names: list[str]) -> Path:
    """A model store at ``target`` holding the latest version of each of ``names``."""
    for name in names:
        version = (source / name / "latest").read_text().strip()
        shutil.copytree(source / name / version, target / name / version)
        (target / name / "latest").write_text(version)
    return target
