"""Put new versions of a stored model into a BentoML model store, as a registration would, for
the tests of loading versions while serving: a copy of the latest version under a new version
(new ``model.yaml`` version and creation time, ``metadata.json``'s version), optionally altered
(damaged) before the store's ``latest`` pointer moves to it."""

from __future__ import annotations

import hashlib
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


def remove_version(store: Path, name: str, version: str) -> None:
    """Delete ``version``; ``latest`` goes back to the newest remaining one (as BentoML's
    ``models delete``)."""
    folder = store / name
    shutil.rmtree(folder / version)
    remaining = sorted(
        (yaml.safe_load((path / "model.yaml").read_text())["creation_time"], path.name)
        for path in folder.iterdir()
        if path.is_dir()
    )
    (folder / "latest").write_text(remaining[-1][1])


def copy_store(source: Path, target: Path, names: list[str]) -> Path:
    """A model store at ``target`` holding the latest version of each of ``names``."""
    for name in names:
        version = (source / name / "latest").read_text().strip()
        shutil.copytree(source / name / version, target / name / version)
        (target / name / "latest").write_text(version)
    return target


# Damages, each a failure kind that must leave the model unavailable (or the old version
# serving) with its reason, never crash a worker.
def truncate_metadata(folder: Path) -> None:
    """``head -c 200 metadata.json`` (issue 14, row 1)."""
    path = folder / "metadata.json"
    path.write_bytes(path.read_bytes()[:200])


def drop_metadata_key(key: str) -> Alter:
    def alter(folder: Path) -> None:
        path = folder / "metadata.json"
        metadata = json.loads(path.read_text())
        del metadata[key]
        path.write_text(json.dumps(metadata))

    return alter


def change_onnx_keeping_sha(folder: Path) -> None:
    """An ONNX file ONNX Runtime refuses whose sha256 the metadata matches."""
    onnx = folder / "model.onnx"
    onnx.write_bytes(b"this is not an ONNX graph" + onnx.read_bytes()[:100])
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
    path.write_text(json.dumps(metadata))


def change_onnx_only(folder: Path) -> None:
    """A bit flipped in the graph: its sha256 no longer matches the metadata."""
    onnx = folder / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))


def break_warm_up(folder: Path) -> None:
    """Metadata whose input schema the graph refuses (float64 instead of its dtypes): the file
    opens but the warm-up inference fails."""
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    for spec in metadata["inputs"]:
        spec["dtype"] = "float64"
    path.write_text(json.dumps(metadata))


def invert_output(output: str) -> Alter:
    """A graph whose ``output`` is ``1 - output`` (a probability turned upside down): loads,
    passes every check and answers, wrongly; the metadata's sha256 matches it."""

    def alter(folder: Path) -> None:
        import onnx
        from onnx import helper

        path = folder / "model.onnx"
        graph_model = onnx.load(path)
        graph = graph_model.graph
        raw = f"{output}_before_inversion"
        for node in graph.node:
            node.output[:] = [raw if name == output else name for name in node.output]
        one = helper.make_node("Constant", [], ["one"], value_float=1.0)
        graph.node.extend([one, helper.make_node("Sub", ["one", raw], [output])])
        onnx.save(graph_model, path)
        metadata_path = folder / "metadata.json"
        metadata = json.loads(metadata_path.read_text())
        metadata["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        metadata_path.write_text(json.dumps(metadata))

    return alter
