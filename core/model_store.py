"""Load exported models from the BentoML model store, verified and warmed up.

Each stored model holds ``model.onnx`` and ``metadata.json`` (written by ``training.registry``).
Loading reads and checks the metadata, checks the ONNX file's sha256 against it, opens a session
with the configured provider and runs one warm-up inference; any failure (an unreadable or
incomplete metadata file, a graph ONNX Runtime refuses, a failing warm-up) becomes a
``ModelUnavailableError`` whose message tells the operator what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort

from core.precision_names import precision_of
from core.runtime import ProviderUnavailableError, create_session

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
# After each online call, hand the CPU arena's unused chunks back: without it, one large batch
# (a transformer on 256 long texts) keeps its ~2 GB of activations in the process for good. The
# cost is unmeasurable on small calls (~330 us GRU calls, with and without), but a batch job's
# large chunks would allocate their activations afresh every call (fraud, 65,536-row chunks:
# ~7 ms per call, 0.74x the job's rows/s), so batch chunks keep the arena (``LoadedModel.run``).
RELEASE_ARENA = ort.RunOptions()
RELEASE_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
# What loading and ``/v1/models`` read from every stored model's metadata.
REQUIRED_KEYS = ("name", "version", "task", "onnx_file", "sha256", "inputs", "outputs")


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded; the message says why and how to fix it."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A verified, warmed-up ONNX model and what ``/v1/models`` says about it."""

    metadata: dict[str, Any]
    session: ort.InferenceSession
    provider: str
    directory: Path  # the stored model's folder (files stored beside the graph)
    output_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.output_names = [output.name for output in self.session.get_outputs()]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def run(
        self, inputs: dict[str, np.ndarray], release_arena: bool = True
    ) -> dict[str, np.ndarray]:
        """One inference call: named input arrays in, named output arrays out.

        ``release_arena``: hand the CPU arena's unused memory back after the call (online
        calls); ``False`` for a batch job's chunks, which reuse it call after call (a job on the
        service's own session calls ``release_arena()`` when it ends).

        An empty batch (a batch-job chunk whose rows were all rejected) never reaches ONNX
        Runtime, where some graphs (the GRU's) abort the process on batch 0: it gets the
        outputs of the warm-up row, cut to zero rows.
        """
        if next(iter(inputs.values())).shape[0] == 0:
            warm_up = self.run(self._warm_up_inputs())
            return {name: values[:0] for name, values in warm_up.items()}
        outputs = self.session.run(None, inputs, RELEASE_ARENA if release_arena else None)
        return dict(zip(self.output_names, outputs, strict=True))

    def release_arena(self) -> None:
        """Hand the CPU arena's unused memory back now (ONNX Runtime shrinks it only at the end
        of a call: this makes one call on the warm-up row)."""
        self.run(self._warm_up_inputs())

    def _warm_up_inputs(self) -> dict[str, np.ndarray]:
        return warm_up_inputs(self.metadata["inputs"], self.metadata.get("warm_up_axes"))

    def describe(self) -> dict[str, Any]:
        """The public description served by ``GET /v1/models``."""
        meta = self.metadata
        return {
            "name": self.name,
            "version": self.version,
            "task": meta["task"],
            "status": "ready",
            "sha256": meta["sha256"],
            "provider": self.provider,
            "inputs": meta["inputs"],
            "outputs": meta["outputs"],
            "labels": meta.get("labels", []),
            "metrics": meta.get("headline_metrics", {}),
            "precision": precision_of(meta),
            # True only when `--time-guard` cut the run short of its preset (training.completion)
            "under_trained": bool(meta.get("training", {}).get("under_trained", False)),
        }


def warm_up_inputs(
    input_schema: list[dict[str, Any]], axis_sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Zero-filled inputs of batch 1 matching the schema.

    Every symbolic axis is 1 unless ``axis_sizes`` (the metadata's ``warm_up_axes``) says
    otherwise: the text generator's ``past_sequence`` must be 0 so that the attention mask's
    ``total_sequence`` (1) equals past + new positions.
    """
    sizes = axis_sizes or {}
    return {
        spec["name"]: np.zeros(
            [dim if isinstance(dim, int) else sizes.get(dim, 1) for dim in spec["shape"]],
            dtype=spec["dtype"],
        )
        for spec in input_schema
    }


def stored_model_exists(tag: str) -> bool:
    """Whether the BentoML model store holds ``tag``."""
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        return False
    return True


def missing_model_error(tag: str) -> ModelUnavailableError:
    """The error for a model the store does not hold: how to get it there."""
    return ModelUnavailableError(
        f"model {tag!r} is not in the BentoML model store; train it first "
        f"(`make models`, or `python -m training <area>`)"
    )


def model_store_folder() -> Path:
    """The BentoML model store's folder (``$BENTOML_HOME/models``)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


def latest_version(name: str) -> str | None:
    """The version the store's ``latest`` pointer of ``name`` names, as written; ``None`` when
    no version of ``name`` is stored.

    The pointer is read as it is: BentoML's own lookup would parse the version's
    ``model.yaml`` first, and silently point ``latest`` back at the newest readable version
    when it names a missing folder, so a broken registration would go unnoticed. Loading
    the version it names then fails with the reason. ``ModelUnavailableError`` when the
    pointer is unreadable or empty.
    """
    folder = model_store_folder() / name
    try:
        version = (folder / "latest").read_text().strip()
    except FileNotFoundError:
        if not folder.is_dir() or not any(path.is_dir() for path in folder.iterdir()):
            return None
        try:  # versions but no pointer: BentoML writes it for the newest version
            return bentoml.models.get(f"{name}:latest").tag.version
        except Exception as exc:
            raise ModelUnavailableError(
                f"model {name!r}: the store has no `latest` pointer and its newest version is "
                f"unreadable ({type(exc).__name__}); re-register the model"
            ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelUnavailableError(
            f"model {name!r}: the store's `latest` pointer is unreadable ({type(exc).__name__})"
        ) from exc
    if not version or "/" in version or version in (".", ".."):
        raise ModelUnavailableError(
            f"model {name!r}: the store's `latest` pointer names no version ({version!r}); "
            "write a stored version into it or re-register the model"
        )
    return version


def read_metadata(root: Path, tag: str) -> dict[str, Any]:
    """The stored model's metadata file, checked to be a JSON object with ``REQUIRED_KEYS``."""
    try:
        metadata = json.loads((root / METADATA_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnavailableError(
            f"model {tag!r}: {METADATA_FILE} is unreadable ({type(exc).__name__}: "
            f"{str(exc).replace(str(root), '.')}); re-register the model"
        ) from exc
    if not isinstance(metadata, dict):
        raise ModelUnavailableError(f"model {tag!r}: {METADATA_FILE} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ModelUnavailableError(
            f"model {tag!r}: {METADATA_FILE} lacks {missing}; re-register the model"
        )
    return metadata


def read_stored_model(tag: str) -> tuple[dict[str, Any], Path]:
    """Return ``(metadata, onnx_path)`` of a model in the store, checking its sha256."""
    try:
        stored = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as exc:
        if tag.endswith(":latest"):
            raise missing_model_error(tag) from exc
        raise ModelUnavailableError(
            f"model {tag!r}: no such version in the store (its folder is missing); point "
            "the store's `latest` at a stored version or re-register the model"
        ) from exc
    except Exception as exc:  # a damaged store entry (model.yaml) is this model's problem only
        raise ModelUnavailableError(
            f"model {tag!r}: its store entry (model.yaml) is unreadable ({type(exc).__name__}); "
            "re-register the model"
        ) from exc
    root = Path(stored.path)
    metadata = read_metadata(root, tag)
    onnx_path = root / metadata["onnx_file"]
    try:
        actual = sha256_file(onnx_path)
    except OSError as exc:
        raise ModelUnavailableError(
            f"model {tag!r}: {metadata['onnx_file']} is unreadable ({type(exc).__name__}); "
            f"re-register the model"
        ) from exc
    if actual != metadata["sha256"]:
        raise ModelUnavailableError(
            f"model {tag!r}: sha256 of {metadata['onnx_file']} is {actual}, metadata says "
            f"{metadata['sha256']}; the file was altered or corrupted, re-export the model"
        )
    return metadata, onnx_path


def load_model(tag: str, provider_setting: str, intra_op_threads: int = 0) -> LoadedModel:
    """Load, verify and warm up one model; raise ModelUnavailableError with the reason."""
    metadata, onnx_path = read_stored_model(tag)
    try:
        session, provider = create_session(onnx_path, provider_setting, intra_op_threads)
    except ProviderUnavailableError as exc:
        raise ModelUnavailableError(f"model {tag!r}: {exc}") from exc
    except Exception as exc:  # ONNX Runtime's own errors (invalid graph, protobuf, ...)
        raise ModelUnavailableError(
            f"model {tag!r}: ONNX Runtime refused {onnx_path.name}: "
            f"{str(exc).replace(str(onnx_path), onnx_path.name)}"
        ) from exc
    model = LoadedModel(metadata, session, provider, onnx_path.parent)
    try:
        model.run(warm_up_inputs(metadata["inputs"], metadata.get("warm_up_axes")))
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {tag!r}: the warm-up inference failed ({type(exc).__name__}: {exc})"
        ) from exc
    if model.describe()["under_trained"]:
        log.warning(
            "model %s:%s is under-trained: %s of its preset (a --time-guard cut it short)",
            model.name,
            model.version,
            metadata["training"].get("completion"),
        )
    log.info(
        "model %s:%s ready on %s (sha256 %s)",
        model.name,
        model.version,
        provider,
        metadata["sha256"][:12],
    )
    return model
