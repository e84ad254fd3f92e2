"""torch -> ONNX export in one file, with a parity check that fails the export if violated."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from training.areas import TrainingError

OPSET = 18
PARITY_TOLERANCE = 1e-4


class ParityError(TrainingError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


def export_onnx(
    module: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    output_names: list[str],
    path: Path,
    dynamic_axes: dict[str, dict[int, str]],
) -> Path:
    """Export ``module`` to a single ONNX file (weights inside) at opset ``OPSET``.

    ``example_inputs`` maps graph input names to tensors in ``forward``'s argument order;
    ``dynamic_axes`` maps input names to ``{axis: symbolic name}`` (the batch axis at least).
    """
    dims = {
        axis_name: torch.export.Dim(axis_name)
        for axes in dynamic_axes.values()
        for axis_name in axes.values()
    }
    # Positional (a tuple in argument order), so graph input names need not match forward's.
    dynamic_shapes = tuple(
        {axis: dims[axis_name] for axis, axis_name in dynamic_axes.get(name, {}).items()}
        for name in example_inputs
    )
    module.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        torch.onnx.export(
            module,
            tuple(example_inputs.values()),
            str(path),
            input_names=list(example_inputs),
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def check_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    inputs: dict[str, torch.Tensor],
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Run real ``inputs`` through PyTorch and ONNX Runtime; return the max abs difference.

    Raises ParityError when any output differs by more than ``tolerance``.
    """
    module.eval()
    with torch.no_grad():
        expected = module(*inputs.values())
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    worst = max(
        float(np.max(np.abs(got - want.numpy()), initial=0.0))
        for got, want in zip(actual, expected, strict=True)
    )
    if not worst <= tolerance:
        raise ParityError(f"ONNX vs PyTorch max abs diff {worst:.3g} > tolerance {tolerance:g}")
    return worst
