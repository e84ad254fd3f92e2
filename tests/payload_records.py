"""Payload log records built in-process: V2 tensor records (JSON or binary) of the fraud scorer
and a writer over a folder, for the replay tests (tests/test_payload_log.py,
tests/test_batch_ray.py); what a V2 replay with the version that answered must show."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from harness.payloads import transactions
from service.areas.fraud import Transaction, to_arrays
from service.batch.compare import Comparison
from service.payload_log.records import Captured
from service.payload_log.writer import PayloadWriter, Retention
from service.tensors import InferRequest, datatype, encode_response

FOREVER = Retention(max_bytes=10**12, max_age_s=10**9)
# ONNX Runtime's kernels may sum in another order for another number of rows in a call (the
# fraud graph's anomaly score, the autoencoder's reconstruction error): an output replayed in
# other batches than the ones that answered moves by float32 rounding (2.4e-7 measured).
FLOAT32_ROUNDING = 1e-6


def v2_body(arrays: dict[str, np.ndarray], binary: bool) -> bytes:
    """A V2 request of ``arrays``: JSON data, or each input's bytes after the JSON header."""
    entries = []
    for name, values in arrays.items():
        entry = {"name": name, "shape": list(values.shape), "datatype": datatype(values.dtype)}
        if binary:
            entry["parameters"] = {"binary_data_size": values.nbytes}
        else:
            entry["data"] = values.ravel().tolist()
        entries.append(entry)
    header = json.dumps({"inputs": entries}).encode()
    return header + b"".join(values.tobytes() for values in arrays.values()) if binary else header


def v2_record(
    request_id: str,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    binary: bool,
    model: str = "fraud-scorer",
) -> Captured:
    """An answered V2 record of ``model`` (version ``v1``): ``arrays`` in, ``outputs``
    answered (binary outputs for a binary request, as a client asking
    ``binary_data_output`` gets them)."""
    answered = InferRequest(None, arrays, [(name, binary) for name in outputs])
    response, _ = encode_response(model, "v1", answered, outputs)
    media = "application/octet-stream" if binary else "application/json"
    route = f"/v2/models/{model}/infer"
    record = Captured(request_id, time.time(), route, model, media, b"")
    record.request = v2_body(arrays, binary)
    record.status, record.response_type, record.response = 200, media, response
    record.version = "v1"
    return record


def fraud_arrays(rows: int, seed: int) -> dict[str, np.ndarray]:
    return to_arrays([Transaction(**row) for row in transactions(rows, seed=seed)])


def log_writer(folder: Path, redact: frozenset[str] = frozenset()) -> PayloadWriter:
    return PayloadWriter(
        folder, redact, 64, 10**7, part_records=100, flush_s=3600, retention=FOREVER
    )


def assert_same_answers(result: Comparison) -> None:
    """A fraud V2 replay with the version that answered: the probability exactly as logged
    (difference 0, PSI 0), the anomaly score within float32 rounding."""
    by_name = {field.name: field for field in result.fields}
    assert set(by_name) == {"fraud_probability", "anomaly_score"}
    probability = by_name["fraud_probability"]
    assert probability.max_difference == 0.0 and probability.psi == 0.0, probability
    assert by_name["anomaly_score"].max_difference <= FLOAT32_ROUNDING, by_name["anomaly_score"]
