"""Tensors of the Open Inference Protocol's gRPC messages: a ``ModelInferRequest`` as checked
numpy arrays (``service.tensors.InferRequest``), outputs as a ``ModelInferResponse``.

The rules are HTTP's (``service.tensors``, whose checks this module calls): every graph input
once, its datatype and shape, the data's size, values of a kind and range the datatype holds,
finite floats, named axes that agree, 1 to ``max_rows`` rows, known outputs, no shared memory
and no classification extension; every refusal a ``RequestInputError`` naming the input.

Input data comes either as ``raw_input_contents`` (one little-endian, row-major byte string per
input, in the order of ``inputs``: a zero-copy ``np.frombuffer`` view) or as each input's typed
``contents`` (the field of its datatype: ``fp32_contents`` for FP32, ``int64_contents`` for
INT64, ``uint_contents`` for UINT8/16/32, ...), never both. The answer mirrors the request:
``raw_output_contents`` when the inputs came raw (what ``tritonclient.grpc`` sends and reads),
typed ``contents`` when they came typed; an output whose datatype has no typed field (FP16) is
always raw, and then every output is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service import tensors
from service.batching import Arrays
from service.errors import RequestInputError
from service.grpc_api import grpc_predict_v2_pb2 as pb

# the InferTensorContents field of each datatype (FP16 has none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parse_request(
    request: pb.ModelInferRequest, inputs: list[dict[str, Any]], outputs: list[str], max_rows: int
) -> tensors.InferRequest:
    """Decode and check ``request`` against the model's input specs and output names; each
    requested output's flag says whether it goes raw (it does when the inputs came raw).
    ``RequestInputError`` naming what is wrong."""
    raw = len(request.raw_input_contents) > 0
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise RequestInputError(
            ["raw_input_contents"],
            f"{len(request.raw_input_contents)} entries for {len(request.inputs)} inputs: "
            "give one per input, in the order of inputs",
            "wrong_size",
        )
    arrays = _inputs(request, inputs, raw)
    tensors.check_axes(arrays, inputs, max_rows)
    wanted = None
    if request.outputs:
        wanted = [
            {"name": o.name, "parameters": _parameters(o.parameters)} for o in request.outputs
        ]
    requested = tensors.requested_outputs(wanted, outputs, raw)
    return tensors.InferRequest(request.id or None, arrays, requested)


def encode_response(
    name: str, version: str, request: tensors.InferRequest, outputs: Arrays
) -> pb.ModelInferResponse:
    """The answer: the requested outputs in order, raw or typed as the request's inputs came
    (all raw when one has no typed field); never a NaN or infinity (``RequestInputError`` at
    ``outputs.<name>``, as on HTTP)."""
    arrays = [
        (output, tensors.finite_output(output, outputs[output])) for output, _ in request.outputs
    ]
    raw = any(binary for _, binary in request.outputs) or any(
        tensors.datatype(array.dtype) not in CONTENTS_FIELD for _, array in arrays
    )
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id or "")
    for output, array in arrays:
        described = response.outputs.add(
            name=output, datatype=tensors.datatype(array.dtype), shape=array.shape
        )
        if raw:
            response.raw_output_contents.append(array.tobytes())
        else:
            field = getattr(described.contents, CONTENTS_FIELD[described.datatype])
            field.extend(array.reshape(-1).tolist())
    return response


def _parameters(parameters: Any) -> dict[str, Any]:
    """A protocol ``map<string, InferParameter>`` as plain values."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        for key, value in parameters.items()
    }


def _inputs(request: pb.ModelInferRequest, specs: list[dict[str, Any]], raw: bool) -> Arrays:
    """Every graph input exactly once, decoded in request order."""
    wanted = [spec["name"] for spec in specs]
    if not request.inputs:
        raise RequestInputError(["inputs"], f"must be a list of the inputs {wanted}", "missing")
    by_name = {spec["name"]: spec for spec in specs}
    arrays: Arrays = {}
    for index, entry in enumerate(request.inputs):
        if entry.name not in by_name:
            raise RequestInputError(
                ["inputs"],
                f"unknown input {entry.name!r}; the model takes {wanted}",
                "unknown_input",
            )
        if entry.name in arrays:
            raise RequestInputError([entry.name], "given more than once", "duplicate_input")
        data = request.raw_input_contents[index] if raw else None
        arrays[entry.name] = _tensor(entry, by_name[entry.name], data)
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise RequestInputError(
            ["inputs"], f"missing {missing}; the model takes {wanted}", "missing"
        )
    return arrays


def _tensor(
    entry: pb.ModelInferRequest.InferInputTensor, spec: dict[str, Any], raw: bytes | None
) -> np.ndarray:
    """One input as an array of the spec's dtype and the given shape, from ``raw`` bytes or
    from the entry's typed contents."""
    name = spec["name"]
    dtype = tensors.input_dtype(spec, entry.datatype)
    shape = tensors.check_shape(name, list(entry.shape), spec["shape"])
    if "shared_memory_region" in entry.parameters:
        raise RequestInputError([name], "shared memory is not supported", "unsupported")
    given = [field.name for field, _ in entry.contents.ListFields()]
    if raw is not None:
        if given:
            raise RequestInputError(
                [name], "give raw_input_contents or typed contents, not both", "both"
            )
        needed = math.prod(shape) * dtype.itemsize
        if len(raw) != needed:
            raise RequestInputError(
                [name],
                f"{len(raw)} bytes of raw_input_contents; shape {shape} of "
                f"{entry.datatype} is {needed} bytes",
                "wrong_size",
            )
        array = np.frombuffer(raw, dtype).reshape(shape)
    else:
        field = CONTENTS_FIELD.get(entry.datatype)
        if field is None or given != [field]:
            expected = f"contents.{field}" if field else "raw_input_contents"
            raise RequestInputError(
                [name],
                f"data must be in {expected} for {entry.datatype}; got {given or 'none'}",
                "wrong_type",
            )
        array = tensors.values_as(name, list(getattr(entry.contents, field)), dtype, shape)
    tensors.check_finite(name, array)
    return array
