"""Model versions for the tests of loading versions while serving and of rollouts: new
versions (``harness.model_versions.new_version``: a copy of the latest under a new version,
optionally altered before the store's ``latest`` pointer moves to it), removal, and the
damages and alterations the tests apply."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import yaml

from harness.model_versions import Alter, copy_store, new_version, store_of

__all__ = ["Alter", "copy_store", "new_version", "store_of"]


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
        _match_sha(folder)

    return alter


def reverse_classes(output: str, classes: int) -> Alter:
    """A graph whose ``output`` (``[rows, classes]`` probabilities) lists the classes in reverse
    order, every other output unchanged: each row's best class becomes ``classes - 1 - c``
    with the same probability; the metadata's sha256 matches it."""

    def alter(folder: Path) -> None:
        import onnx
        from onnx import helper

        path = folder / "model.onnx"
        graph_model = onnx.load(path)
        graph = graph_model.graph
        raw = f"{output}_in_order"
        for node in graph.node:
            node.output[:] = [raw if name == output else name for name in node.output]
            node.input[:] = [raw if name == output else name for name in node.input]
        order = helper.make_tensor(
            "reversed_order", onnx.TensorProto.INT64, [classes], list(range(classes - 1, -1, -1))
        )
        graph.initializer.append(order)
        graph.node.append(helper.make_node("Gather", [raw, "reversed_order"], [output], axis=1))
        onnx.save(graph_model, path)
        _match_sha(folder)

    return alter


def _match_sha(folder: Path) -> None:
    """The metadata's sha256 of the (altered) graph."""
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    path.write_text(json.dumps(metadata))
