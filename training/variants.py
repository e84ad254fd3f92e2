"""INT8 variants of an exported FP32 graph: quantized with ONNX Runtime's tools, gated on the
same held-out set as the FP32 graph, registered as versions of the same model.

Each area declares an ``Int8Plan`` per model: how to quantize (``dynamic``: weights INT8 ahead
of time, activations quantized per call, for MatMul/Gemm/attention-heavy graphs; ``static``:
activations' ranges calibrated on training rows, QDQ format, for convolutions), why, the
held-out evaluation (an ONNX graph in, ``{metric: value}`` out) and the tolerances of its gate.
``build_variants`` quantizes and gates; ``register_with_variants`` stores the variants that
passed (a failed one is never registered: the report says why) before the FP32 graph, so that
the store's ``latest`` pointer names the FP32 version, the one served by default. Each
variant's metadata carries ``precision``, ``variant_of`` (the FP32 graph's sha256: the service
serves the variant of the FP32 version it would serve) and ``gate``.

FP16 is not exported: ONNX Runtime's CPU provider has FP16 kernels for few operators (the
rest would run through casts, slower than FP32), so an FP16 graph only pays on a CUDA GPU, and
training here runs where none is (see docs/OPERATIONS.md, Precision).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from core.model_store import sha256_file
from core.precision import FP32, INT8
from training.registry import register_model

Inputs = dict[str, np.ndarray]
Evaluate = Callable[[Path], dict[str, float]]
Quantize = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Tolerance:
    """A variant may lose at most ``most_lost`` of ``metric`` against the FP32 graph."""

    metric: str
    most_lost: float
    higher_is_better: bool = True

    def lost(self, reference: float, candidate: float) -> float:
        """How much worse ``candidate`` is than ``reference`` (negative: better)."""
        return reference - candidate if self.higher_is_better else candidate - reference


# The gates of issue 25: 0.3 points of accuracy, 0.01 of PR-AUC, 0.02 nats of validation loss.
ACCURACY = Tolerance("accuracy", 0.003)
PR_AUC = Tolerance("pr_auc", 0.01)
VAL_LOSS = Tolerance("val_loss", 0.02, higher_is_better=False)
CLASS_CONSISTENCY = Tolerance("class_consistency", 0.02)  # the GAN, judged by the classifier


ROUNDING = 1e-9  # 3 answers in 1,000 lost is 0.003 lost, not 0.0030000000000000027


@dataclass(frozen=True)
class Int8Plan:
    """How one model's INT8 variant is made and judged.

    ``quantize(fp32_path, int8_path)``: ``dynamic_int8()`` or ``static_int8(calibration)``.
    ``why``: the reason for that choice (the report and the model card repeat it).
    ``evaluate(onnx_path)``: the held-out metrics of a graph, run by ONNX Runtime on CPU.
    """

    quantize: Quantize
    method: Literal["dynamic", "static"]
    why: str
    evaluate: Evaluate
    tolerances: tuple[Tolerance, ...]


@dataclass(frozen=True)
class Variant:
    """A quantized graph and its gate (``passed``, one check per tolerance)."""

    precision: str
    path: Path
    method: str
    why: str
    gate: dict[str, Any]
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.gate["passed"])


def _without_value_info(source: Path, target: Path) -> Path:
    """``source`` without its intermediate shapes: the exporter's ``value_info`` fixes dims that
    ONNX Runtime's quantizer re-infers differently (and then refuses the graph)."""
    model = onnx.load(str(source))
    del model.graph.value_info[:]
    onnx.save(model, str(target))
    return target


def dynamic_int8(op_types: tuple[str, ...] | None = None) -> Quantize:
    """Weights INT8 (signed, per tensor), activations quantized at run time per call."""

    def quantize(fp32: Path, int8: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            clean = _without_value_info(fp32, Path(scratch) / "clean.onnx")
            quantize_dynamic(
                clean,
                int8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types) if op_types else None,
            )

    return quantize


class _Rows(CalibrationDataReader):
    """Calibration batches, one at a time, as ONNX Runtime's calibrator reads them."""

    def __init__(self, batches: list[Inputs]) -> None:
        self._batches: Iterator[Inputs] = iter(batches)

    def get_next(self) -> Inputs | None:
        return next(self._batches, None)


def static_int8(calibration: list[Inputs], op_types: tuple[str, ...]) -> Quantize:
    """QDQ INT8 with per-channel weights and activation ranges (min/max) calibrated on
    ``calibration`` (batches of training rows); only ``op_types`` are quantized."""

    def quantize(fp32: Path, int8: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            clean = _without_value_info(fp32, Path(scratch) / "clean.onnx")
            quantize_static(
                clean,
                int8,
                _Rows(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types),
            )

    return quantize


def gate(
    reference: dict[str, float], candidate: dict[str, float], tolerances: tuple[Tolerance, ...]
) -> dict[str, Any]:
    """Compare a variant's held-out metrics with the FP32 graph's: ``passed`` when no metric
    lost more than its tolerance; one check per tolerance (values rounded for the report)."""
    checks = []
    for tolerance in tolerances:
        want, got = reference[tolerance.metric], candidate[tolerance.metric]
        lost = tolerance.lost(want, got)
        checks.append(
            {
                "metric": tolerance.metric,
                "fp32": round(want, 6),
                "variant": round(got, 6),
                "lost": round(lost, 6),
                "most_lost": tolerance.most_lost,
                "passed": bool(lost <= tolerance.most_lost + ROUNDING),
            }
        )
    return {"passed": all(check["passed"] for check in checks), "checks": checks}


@contextmanager
def _quantizer_advice_muted() -> Iterator[None]:
    """The quantizer logs its pre-processing advice on the root logger at every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_int8(fp32: Path, plan: Int8Plan, directory: Path) -> Variant:
    """Quantize ``fp32`` into ``directory`` and gate it on the plan's held-out evaluation."""
    started = time.perf_counter()
    int8 = directory / f"{fp32.stem}-int8.onnx"
    with _quantizer_advice_muted():
        plan.quantize(fp32, int8)
    verdict = gate(plan.evaluate(fp32), plan.evaluate(int8), plan.tolerances)
    return Variant(INT8, int8, plan.method, plan.why, verdict, time.perf_counter() - started)


def register_with_variants(
    name: str,
    fp32: Path,
    metadata: dict[str, Any],
    variants: list[Variant],
    register: bool,
    extra_files: tuple[Path, ...] = (),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Register the variants that passed their gate, then the FP32 graph (so ``latest`` names
    it); return the FP32 metadata as stored (as given when not ``register``) and one report
    entry per variant (``registered``: its version, or ``None`` with the reason)."""
    base_sha = sha256_file(fp32)
    report = []
    for variant in variants:
        entry = {
            "precision": variant.precision,
            "method": variant.method,
            "why": variant.why,
            "gate": variant.gate,
            "seconds": round(variant.seconds, 1),
            "onnx_bytes": variant.path.stat().st_size,
            "registered": None,
        }
        if not variant.passed:
            entry["not_registered"] = "failed its gate"
        elif register:
            stored = register_model(
                name,
                variant.path,
                {
                    **metadata,
                    "precision": variant.precision,
                    "variant_of": {"precision": FP32, "sha256": base_sha},
                    "gate": {"method": variant.method, **variant.gate},
                },
                extra_files,
            )
            entry["registered"] = stored["version"]
        report.append(entry)
    fp32_metadata = {**metadata, "precision": FP32, "onnx_bytes": fp32.stat().st_size}
    if not register:
        return fp32_metadata, report
    return register_model(name, fp32, fp32_metadata, extra_files), report
