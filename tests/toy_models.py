"""Two toy models the tests export and register themselves (``toy-sum``: ``total = x.sum(1)``;
``toy-counter``: ``next = value + 1``), served by ``tests.toy_sum_area`` and
``tests.toy_counter_area`` through ``DLSERVE_AREA_MODULES``."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from tests.toy_counter_area import MODEL as COUNTER
from tests.toy_sum_area import MODEL as SUM
from training.registry import register_model

PLUGINS = "tests.toy_sum_area,tests.toy_counter_area"


def _register(name: str, graph: onnx.GraphProto, tmp: Path, inputs: list, outputs: list) -> None:
    path = tmp / f"{name}.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    register_model(name, path, {"task": "toy", "inputs": inputs, "outputs": outputs})


def register_toy_models(tmp: Path) -> None:
    """Store ``toy-sum`` and ``toy-counter`` (their graphs written under ``tmp``)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    summing = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)],
        "toy_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        [axes],
    )
    counting = helper.make_graph(
        [helper.make_node("Add", ["value", "one"], ["next"])],
        "toy_counter",
        [helper.make_tensor_value_info("value", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("next", TensorProto.INT64, ["batch"])],
        [one],
    )
    _register(
        SUM,
        summing,
        tmp,
        [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}],
        [{"name": "total", "dtype": "float32", "shape": ["batch"]}],
    )
    _register(
        COUNTER,
        counting,
        tmp,
        [{"name": "value", "dtype": "int64", "shape": ["batch"]}],
        [{"name": "next", "dtype": "int64", "shape": ["batch"]}],
    )
