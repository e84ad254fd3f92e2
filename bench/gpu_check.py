"""The one-command GPU check: every declared model on ONNX Runtime's CUDA provider, its outputs
beside the CPU provider's (parity), and its throughput beside CPU, batch 1 and ``--batch``.

    make setup RUNTIME=gpu && make models && .venv/bin/python -m bench.gpu_check

Exit 0 when every model ran on CUDA within the tolerance; 1 otherwise (a model without CUDA,
e.g. no GPU or a CUDA/cuDNN mismatch, is named with the session's providers). Reads the models
from the BentoML store (``BENTOML_HOME``); inputs are seeded random values of each model's
declared inputs (integer inputs: ones, a valid id for every token and category table).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from bench.ceiling import ceiling_rows_per_second
from core.model_store import LoadedModel, ModelUnavailableError, load_model
from service import registry

# TF32 and cuDNN's kernel choice move float32 results by about 1e-3 relative.
RTOL, ATOL = 1e-2, 1e-3


@dataclass
class Row:
    """One model's result: parity of ``candidate`` against ``reference``, and both rates."""

    model: str
    provider: str
    max_abs_diff: float
    within_tolerance: bool
    rates: dict[str, tuple[float, float]]  # "batch N" -> (reference rows/s, candidate rows/s)


def random_inputs(model: LoadedModel, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of ``batch`` rows for ``model``'s declared inputs; other symbolic axes as its
    warm-up takes them (the text generator's empty past)."""
    sizes = {**model.metadata.get("warm_up_axes", {}), "batch": batch}
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in model.metadata["inputs"]:
        shape = [dim if isinstance(dim, int) else sizes.get(dim, 1) for dim in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            inputs[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            inputs[spec["name"]] = np.ones(shape, dtype=dtype)
    return inputs


def compare(reference: LoadedModel, candidate: LoadedModel, batch: int, seconds: float) -> Row:
    """``candidate``'s outputs against ``reference``'s on the same inputs, and both rates."""
    inputs = random_inputs(reference, batch)
    expected, got = reference.run(inputs), candidate.run(inputs)
    diffs = [float(np.max(np.abs(expected[n] - got[n]), initial=0.0)) for n in expected]
    close = all(np.allclose(got[n], expected[n], rtol=RTOL, atol=ATOL) for n in expected)
    rates = {}
    for rows in sorted({1, batch}):
        sample = random_inputs(reference, rows)
        rates[f"batch {rows}"] = (
            ceiling_rows_per_second(reference, sample, seconds)[0],
            ceiling_rows_per_second(candidate, sample, seconds)[0],
        )
    return Row(candidate.name, candidate.provider, max(diffs), close, rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="rows of the larger batch")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per cell and provider")
    parser.add_argument("--models", help="comma list of model names (default: every declared)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else [s.name for s in registry.model_specs()]
    failed = []
    print(f"{'model':24} {'provider':8} {'max |gpu-cpu|':>14}  rows/s cpu -> gpu")
    for name in names:
        try:
            gpu = load_model(f"{name}:latest", "cuda")
        except ModelUnavailableError as error:
            print(f"{name:24} {'-':8} {'-':>14}  {error}")
            failed.append(name)
            continue
        row = compare(load_model(f"{name}:latest", "cpu"), gpu, args.batch, args.seconds)
        rates = ", ".join(
            f"{k}: {c:,.0f} -> {g:,.0f} ({g / c:.1f}x)" for k, (c, g) in row.rates.items()
        )
        print(f"{name:24} {row.provider:8} {row.max_abs_diff:14.2e}  {rates}")
        if not row.within_tolerance:
            failed.append(name)
    print(f"{len(names) - len(failed)}/{len(names)} models on CUDA within rtol {RTOL}, atol {ATOL}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
