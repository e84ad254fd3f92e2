"""Tensors of the Open Inference Protocol (KServe V2): a request's inputs as checked numpy
arrays, and output arrays as the answer, in JSON or with the binary-tensor extension.

Pure functions over the body's bytes and the stored model's schema (``metadata["inputs"]``:
name, dtype, shape whose named axes, like ``batch``, vary); the routes are in
``service.open_inference``. Input data comes as a JSON array (flat or nested, row-major) or,
with the extension, as ``parameters.binary_data_size`` raw little-endian bytes after the JSON
header, whose length the ``Inference-Header-Content-Length`` header gives. Outputs are sent
binary when the output's ``parameters.binary_data`` (default: the request's
``parameters.binary_data_output``, else false) says so.

Every refusal is a ``RequestInputError`` whose ``loc`` names the input (or ``inputs``,
``outputs``, ``parameters``, ``body``) and whose message states the rule: a wrong datatype,
shape or size, a named axis that differs between inputs, rows outside ``1..max_rows``, a value
the datatype cannot hold, a NaN or infinity, an ``Inference-Header-Content-Length`` or
``binary_data_size`` that is not an integer byte count within the body; and an output the
inputs drove to NaN or infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.batching import Arrays
from service.errors import RequestInputError
from service.request_numbers import bounded_int

DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
NAMES = {dtype: name for name, dtype in DATATYPES.items()}
# the kinds of JSON-decoded values (numpy's guess) each kind of datatype accepts
JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
ANY_SIZE = -1  # the protocol's mark for an axis of any size


def datatype(dtype: str | np.dtype) -> str:
    """The protocol's name of a numpy dtype (``float32`` -> ``FP32``)."""
    return NAMES[np.dtype(dtype)]


def protocol_shape(shape: list[int | str]) -> list[int]:
    """A stored shape with each named (variable) axis as -1."""
    return [dim if isinstance(dim, int) else ANY_SIZE for dim in shape]


def tensor_metadata(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored input or output spec as the protocol's ``$metadata_tensor``."""
    return {
        "name": spec["name"],
        "datatype": datatype(spec["dtype"]),
        "shape": protocol_shape(spec["shape"]),
    }


@dataclass(frozen=True)
class InferRequest:
    """A checked inference request: its ``id`` (echoed), the graph ``inputs``, and which
    outputs to answer, each with whether it goes binary."""

    id: str | None
    inputs: Arrays
    outputs: list[tuple[str, bool]]


def parse_request(
    body: bytes,
    header_length: str | None,
    inputs: list[dict[str, Any]],
    outputs: list[str],
    max_rows: int,
) -> InferRequest:
    """Decode and check an inference request against the model's input specs and output
    names; ``RequestInputError`` naming what is wrong."""
    header, binary = _split(body, header_length)
    request = _object(_json(header), "body")
    parameters = _object(request.get("parameters", {}), "parameters")
    binary_output = _flag(parameters, "binary_data_output", ["parameters"])
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestInputError(["id"], "id must be a string", "wrong_type")
    arrays = _inputs(request.get("inputs"), inputs, binary)
    check_axes(arrays, inputs, max_rows)
    requested = requested_outputs(request.get("outputs"), outputs, binary_output)
    return InferRequest(request_id, arrays, requested)


def encode_response(
    name: str, version: str, request: InferRequest, outputs: Arrays
) -> tuple[bytes, int | None]:
    """The answer's body and, when some output is binary, the JSON header's length (the
    ``Inference-Header-Content-Length`` to send). A float output holding a NaN or infinity is
    never sent (JSON would carry it as ``null``): ``RequestInputError`` at ``outputs.<name>``."""
    described = []
    blobs = []
    for output, binary in request.outputs:
        array = finite_output(output, outputs[output])
        entry: dict[str, Any] = {
            "name": output,
            "datatype": datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            blobs.append(array.tobytes())
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = array.reshape(-1)
        described.append(entry)
    answer: dict[str, Any] = {"model_name": name, "model_version": version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = described
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def finite_output(name: str, array: np.ndarray) -> np.ndarray:
    """Output ``name`` as a contiguous array; never a NaN or infinity (JSON would carry it as
    ``null``): ``RequestInputError`` at ``outputs.<name>``."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestInputError(
            ["outputs", name],
            "the model's output for these inputs is not finite (NaN or infinity); "
            "send inputs within the model's documented range",
            "not_finite_output",
        )
    return array


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary data after it."""
    if header_length is None:
        return body, memoryview(b"")
    length = bounded_int(  # at most the body's bytes
        header_length, ["Inference-Header-Content-Length"], 0, len(body), "bad_header_length"
    )
    return body[:length], memoryview(body)[length:]


def _json(header: bytes) -> Any:
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise RequestInputError(["body"], f"not valid JSON: {exc}", "invalid_json") from exc


def _object(value: Any, where: str | int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestInputError([where], "must be a JSON object", "wrong_type")
    return value


def _flag(
    parameters: dict[str, Any], key: str, loc: list[str | int], default: bool = False
) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise RequestInputError([*loc, key], "must be true or false", "wrong_type")
    return value


def _inputs(given: Any, specs: list[dict[str, Any]], binary: memoryview) -> Arrays:
    """Every graph input exactly once, decoded in request order (binary data is consumed in
    that order)."""
    wanted = [spec["name"] for spec in specs]
    if not isinstance(given, list) or not given:
        raise RequestInputError(["inputs"], f"must be a list of the inputs {wanted}", "missing")
    by_name = {spec["name"]: spec for spec in specs}
    arrays: Arrays = {}
    offset = 0
    for entry in given:
        name = _object(entry, "inputs").get("name")
        if name not in by_name:
            raise RequestInputError(
                ["inputs"], f"unknown input {name!r}; the model takes {wanted}", "unknown_input"
            )
        if name in arrays:
            raise RequestInputError([name], "given more than once", "duplicate_input")
        arrays[name], offset = _tensor(entry, by_name[name], binary, offset)
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise RequestInputError(
            ["inputs"], f"missing {missing}; the model takes {wanted}", "missing"
        )
    if offset != len(binary):
        raise RequestInputError(
            ["body"],
            f"{len(binary) - offset} bytes of binary data after the inputs' binary_data_size",
            "wrong_size",
        )
    return arrays


def _tensor(
    entry: dict[str, Any], spec: dict[str, Any], binary: memoryview, offset: int
) -> tuple[np.ndarray, int]:
    """One input as an array of the spec's dtype and the given shape; the binary offset after
    it."""
    name = spec["name"]
    dtype = input_dtype(spec, entry.get("datatype"))
    expected = datatype(dtype)
    shape = check_shape(name, entry.get("shape"), spec["shape"])
    count = math.prod(shape)
    parameters = _object(entry.get("parameters", {}), name)
    if "shared_memory_region" in parameters:
        raise RequestInputError([name], "shared memory is not supported", "unsupported")
    size = parameters.get("binary_data_size")
    if size is None:
        array = values_as(name, entry.get("data"), dtype, shape)
    else:
        if "data" in entry:
            raise RequestInputError([name], "give data or binary_data_size, not both", "both")
        needed = count * dtype.itemsize
        if type(size) is not int or size != needed:  # not 40.0, not true
            raise RequestInputError(
                [name],
                f"binary_data_size {size!r}; shape {shape} of {expected} is {needed} bytes",
                "wrong_size",
            )
        if offset + size > len(binary):
            raise RequestInputError(
                [name],
                f"binary data ends {offset + size - len(binary)} bytes short of this input",
                "wrong_size",
            )
        array = np.frombuffer(binary, dtype, count, offset).reshape(shape)
        offset += size
    check_finite(name, array)
    return array, offset


def input_dtype(spec: dict[str, Any], given: Any) -> np.dtype:
    """The numpy dtype of input ``spec``, when the request's ``datatype`` is its protocol
    name; ``RequestInputError`` naming the input otherwise."""
    dtype = np.dtype(spec["dtype"])
    expected = datatype(dtype)
    if given != expected:
        raise RequestInputError(
            [spec["name"]], f"datatype {given!r}; the model takes {expected}", "wrong_datatype"
        )
    return dtype


def check_finite(name: str, array: np.ndarray) -> None:
    """``RequestInputError`` naming input ``name`` when a float value is NaN or infinite."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestInputError([name], "values must be finite numbers", "not_finite")


def check_shape(name: str, given: Any, expected: list[int | str]) -> list[int]:
    """The given shape, if it has the stored rank, its fixed sizes, and no empty axis."""
    fits = (
        isinstance(given, list)
        and len(given) == len(expected)
        and all(type(dim) is int and dim >= 1 for dim in given)
        and all(
            got == want for got, want in zip(given, expected, strict=True) if isinstance(want, int)
        )
    )
    if not fits:
        raise RequestInputError(
            [name],
            f"shape {given!r}; the model takes {protocol_shape(expected)} "
            "(-1: any size of at least 1)",
            "wrong_shape",
        )
    return given


def values_as(name: str, data: Any, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    """JSON values (or a typed list of values) as ``dtype`` in ``shape``: numbers of a kind
    the datatype holds (no fractions for integers, only true/false for BOOL), within its
    range, exactly as many as the shape holds."""
    if not isinstance(data, list):
        raise RequestInputError(
            [name], "data must be a JSON array (or use binary_data_size)", "wrong_type"
        )
    array = _values(name, data, dtype)
    count = math.prod(shape)
    if array.size != count:
        raise RequestInputError(
            [name], f"{array.size} values; shape {shape} holds {count}", "wrong_size"
        )
    return array.reshape(shape)


def _values(name: str, data: list[Any], dtype: np.dtype) -> np.ndarray:
    try:
        values = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise RequestInputError(
            [name], "data must be numbers in a flat or evenly nested array", "wrong_type"
        ) from exc
    if values.size and values.dtype.kind not in JSON_KINDS[dtype.kind]:
        raise RequestInputError(
            [name], f"data holds values that are not {datatype(dtype)}", "wrong_datatype"
        )
    if values.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise RequestInputError(
                [name],
                f"values must be integers from {info.min} to {info.max} ({datatype(dtype)})",
                "out_of_range",
            )
    with np.errstate(over="ignore"):  # FP32 overflow becomes inf, refused as not finite
        return values.astype(dtype, copy=False)


def check_axes(arrays: Arrays, specs: list[dict[str, Any]], max_rows: int) -> None:
    """A named axis has one size across inputs; the rows (axis 0) are 1 to ``max_rows``."""
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        name = spec["name"]
        for axis, size in zip(spec["shape"], arrays[name].shape, strict=True):
            if isinstance(axis, int):
                continue
            first, first_input = sizes.setdefault(axis, (size, name))
            if size != first:
                raise RequestInputError(
                    [name],
                    f"axis {axis!r} is {size} here but {first} in {first_input!r}",
                    "wrong_shape",
                )
    for spec in specs:
        rows = arrays[spec["name"]].shape[0]
        if rows > max_rows:
            raise RequestInputError(
                [spec["name"]], f"{rows} rows; at most {max_rows} per request", "too_many_rows"
            )


def requested_outputs(given: Any, names: list[str], binary_default: bool) -> list[tuple[str, bool]]:
    """The requested outputs in order (default: all), each with whether it goes binary."""
    if given is None:
        return [(name, binary_default) for name in names]
    if not isinstance(given, list) or not given:
        raise RequestInputError(["outputs"], f"must be a list of outputs of {names}", "wrong_type")
    requested: dict[str, bool] = {}
    for entry in given:
        name = _object(entry, "outputs").get("name")
        if name not in names or name in requested:
            raise RequestInputError(
                ["outputs"],
                f"unknown or repeated output {name!r}; the model gives {names}",
                "unknown_output",
            )
        parameters = _object(entry.get("parameters", {}), name)
        if parameters.get("classification"):
            raise RequestInputError(
                ["outputs", name], "the classification extension is not supported", "unsupported"
            )
        requested[name] = _flag(parameters, "binary_data", ["outputs", name], binary_default)
    return list(requested.items())
