"""A batch job's adapter for a V2 replay (``--replay v2``): the graph's own inputs, as they are.

A payload log's V2 records (``service.payload_log.replay``) give rows holding one row (axis 0)
of each graph input under the input's name. ``tensor_adapter`` scores such rows with the
version the job loaded: each row is checked as the ``/v2`` route checks a request (the
version's datatype and shape, finite values, and its area's ``TensorInputs.check``: ranges,
category and token ids), so that a version that would refuse the request rejects the row
with the reason; the valid rows are joined as the micro-batcher joins requests
(``ModelSpec.join``: token sequences padded to the longest), and every graph output becomes
one field under its V2 name, a row of one value as that value, a longer row as a list
(``service.payload_log.v2.row_values``, the rule the logged answers are read by).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from service import registry
from service.area import BatchAdapter, Columns, ModelSpec, ReadyModel
from service.batching import Arrays
from service.errors import RequestInputError
from service.payload_log.v2 import row_values
from service.tensors import check_finite, check_shape, values_as


class NoTensorInputsError(LookupError):
    """The model takes no client tensors (no ``/v2`` route serves it)."""


def _spec(model: str) -> ModelSpec:
    spec = registry.area_of(model).spec_by_name[model]
    if spec.tensors is None:
        raise NoTensorInputsError(f"model {model!r} takes no V2 tensors: replay its routes")
    return spec


def _row(spec: dict[str, Any], value: Any) -> np.ndarray:
    """One row of input ``spec`` as a one-row array of its dtype, checked as ``/v2`` checks
    a request (``RequestInputError`` naming the input)."""
    name, dtype = spec["name"], np.dtype(spec["dtype"])
    if value is None:
        raise RequestInputError([name], "missing", "missing")
    try:
        shape = np.shape(value)
    except ValueError as exc:  # ragged lists
        raise RequestInputError([name], "rows of unequal lengths", "wrong_shape") from exc
    array = values_as(name, [value], dtype, [1, *shape])
    check_shape(name, list(array.shape), spec["shape"])
    check_finite(name, array)
    return array


def _joined(spec: ModelSpec, columns: Mapping[str, np.ndarray], rows: np.ndarray) -> Arrays:
    """The graph inputs of ``rows`` (per-row arrays in ``columns``), joined as the
    micro-batcher joins requests."""
    return spec.join([{name: values[row] for name, values in columns.items()} for row in rows])


def _no_rows(spec: dict[str, Any]) -> np.ndarray:
    """Input ``spec`` with no rows (a named axis as 1)."""
    shape = [size if isinstance(size, int) else 1 for size in spec["shape"][1:]]
    return np.zeros([0, *shape], spec["dtype"])


def validate_rows(model: str, table: pa.Table, ready: ReadyModel) -> tuple[Columns, np.ndarray]:
    """Each row's one-row array per graph input, and per row ``None`` or why ``ready`` would
    refuse it (``input: rule``)."""
    spec = _spec(model)
    rows = table.num_rows
    reasons = np.full(rows, None, dtype=object)
    columns: Columns = {}
    for input_spec in ready.metadata["inputs"]:
        name = input_spec["name"]
        values = np.full(rows, None, dtype=object)
        given = table.column(name).to_pylist() if name in table.column_names else [None] * rows
        for row, value in enumerate(given):
            try:
                values[row] = _row(input_spec, value)
            except RequestInputError as exc:
                reasons[row] = reasons[row] or exc.summary
        columns[name] = values
    check = spec.tensors.check if spec.tensors is not None else None
    valid = np.flatnonzero(np.equal(reasons, None))
    if check is None or not len(valid):
        return columns, reasons
    try:
        check(_joined(spec, columns, valid), ready)
    except RequestInputError:  # find the rows at fault
        for row in valid:
            try:
                check(_joined(spec, columns, np.array([row])), ready)
            except RequestInputError as exc:
                reasons[row] = exc.summary
    return columns, reasons


def tensor_adapter(named: BatchAdapter, ready: ReadyModel) -> BatchAdapter:
    """The V2 replay's adapter for ``named``'s model as ``ready`` (the loaded version) takes
    it: its graph inputs in, its graph outputs out (module docstring); the batch size is
    ``named``'s. ``NoTensorInputsError`` for a model with no ``/v2`` route."""
    spec = _spec(named.model)
    outputs = ready.metadata["outputs"]
    scalar = all(all(size == 1 for size in output["shape"][1:]) for output in outputs)

    def encode(columns: Mapping[str, np.ndarray], ready: ReadyModel) -> tuple[Arrays, Columns]:
        rows = len(next(iter(columns.values())))
        if rows == 0:  # every row rejected: no rows of each input's shape
            return {item["name"]: _no_rows(item) for item in ready.metadata["inputs"]}, {}
        return _joined(spec, columns, np.arange(rows)), {}

    def to_columns(arrays: Arrays, ready: ReadyModel) -> dict[str, Any]:
        return {name: row_values(arrays[name]) for name in ready.model.output_names}

    return BatchAdapter(
        model=named.model,
        input_columns=tuple(input_spec["name"] for input_spec in ready.metadata["inputs"]),
        validate=lambda table, ready: validate_rows(named.model, table, ready),
        encode=encode,
        to_columns=to_columns,
        batch_size=named.batch_size,
        csv_output=scalar,
    )
