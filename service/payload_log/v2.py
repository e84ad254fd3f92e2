"""The tensors of a logged V2 request or answer (``POST /v2/models/{name}/infer``), read back.

A record keeps the body as sent, without its ``Inference-Header-Content-Length`` header: the
JSON header's end is found by parsing it (``raw_decode`` over the body read as Latin-1, one
character per byte), and each tensor is read as its own ``datatype`` and ``shape`` say, from
its ``data`` or its ``binary_data_size`` bytes after the header, in order. The body was
accepted when it was answered, so nothing is checked beyond what reading it needs; anything
unreadable is ``LoggedTensorError``.

A redacted output (``DLSERVE_PAYLOAD_LOG_REDACT``) reads as ``REDACTED`` in every row; a
redacted input cannot be replayed. A tensor becomes one value per row (axis 0) with
``row_values``: a row of one value as that value, a longer row as the list of its values in
row-major order. A batch job's V2 replay
(``service.batch.tensor_adapter``) names its outputs by the same rule, so that a replayed
answer and the logged one compare field by field.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from service.payload_log.records import REDACTED
from service.tensors import DATATYPES

_DECODER = json.JSONDecoder()


class LoggedTensorError(ValueError):
    """A logged V2 body whose tensors cannot be read (redacted, not recorded, malformed)."""


def logged_tensors(body: bytes, key: str) -> dict[str, np.ndarray]:
    """The tensors listed under ``key`` (``inputs`` of a request, ``outputs`` of an answer)
    of a logged V2 body, JSON or with binary data, by name."""
    text = body.decode("latin-1")
    start = len(text) - len(text.lstrip())
    try:
        header, end = _DECODER.raw_decode(text, start)
    except ValueError as exc:
        raise LoggedTensorError(f"the body is not a V2 JSON header: {exc}") from exc
    entries = header.get(key) if isinstance(header, dict) else None
    if not isinstance(entries, list) or not entries:
        raise LoggedTensorError(f"the body lists no {key}")
    binary = memoryview(body)[end:]
    offset = 0
    tensors: dict[str, np.ndarray] = {}
    for entry in entries:
        tensors[entry.get("name")], offset = _tensor(entry, binary, offset, key == "outputs")
    return tensors


def _tensor(entry: Any, binary: memoryview, offset: int, answer: bool) -> tuple[np.ndarray, int]:
    """One tensor entry as an array, and the binary offset after it. A redacted output is
    ``REDACTED`` in each row (the comparison names it); a redacted input cannot be read."""
    try:
        dtype = DATATYPES[entry["datatype"]]
        shape = [int(size) for size in entry["shape"]]
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if entry.get("data") == REDACTED:
            if not answer:
                raise LoggedTensorError(
                    f"input {entry['name']!r} is redacted (DLSERVE_PAYLOAD_LOG_REDACT)"
                )
            return np.full(shape[0], REDACTED, dtype=object), offset
        if size is None:
            return np.array(entry["data"], dtype=dtype).reshape(shape), offset
        array = np.frombuffer(binary, dtype, int(np.prod(shape)), offset).reshape(shape)
        return array, offset + int(size)
    except LoggedTensorError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        name = entry.get("name") if isinstance(entry, dict) else None
        raise LoggedTensorError(
            f"tensor {name!r} cannot be read ({type(exc).__name__}: {exc})"
        ) from exc


def rows_of(tensors: dict[str, np.ndarray]) -> int:
    """The rows (axis 0) every tensor holds; ``LoggedTensorError`` when they differ."""
    rows = {array.shape[0] if array.ndim else 0 for array in tensors.values()}
    if len(rows) != 1 or 0 in rows:
        raise LoggedTensorError(f"the tensors' rows (axis 0) differ or are empty: {sorted(rows)}")
    return rows.pop()


def row_values(array: np.ndarray) -> pa.Array:
    """A tensor as one value per row: the value when a row holds one, else a fixed-size list
    of the row's values (row-major)."""
    flat = np.ascontiguousarray(array).reshape(len(array), -1)
    if flat.shape[1] == 1:
        return pa.array(flat[:, 0])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
