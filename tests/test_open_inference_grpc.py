"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on a real
``bentoml serve``'s gRPC port, with the client Triton and KServe users have
(``tritonclient.grpc``): probes, metadata, raw and typed tensors answering as the HTTP ``/v2``
routes do, every refusal with its status code and message, a model that is not loaded, API
keys and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from bench import grpc_vs_http
from harness.http_checks import metric_value
from harness.images import load_test_images
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.areas import fraud

pytestmark = pytest.mark.http
FRAUD = "fraud-scorer"
IMAGES = "image-classifier"
KEY = "grpc-test-key-0123456789"
DATATYPES = {np.float32: "FP32", np.int64: "INT64", np.uint8: "UINT8"}
TYPED_FIELD = {"FP32": "fp32_contents", "INT64": "int64_contents", "UINT8": "uint_contents"}


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.grpc_address)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def http_client(server: LocalServer) -> Iterator[triton_http.InferenceServerClient]:
    connection = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def stub(server: LocalServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """The protocol's stub as Triton's client package generates it, for typed contents (which
    ``tritonclient.grpc.InferInput`` never sends) and the trailing metadata."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def fraud_arrays(rows: int) -> dict[str, np.ndarray]:
    return fraud.to_arrays([fraud.Transaction(**row) for row in transactions(rows)])


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[triton.InferInput]:
    """``arrays`` as tritonclient's gRPC inputs (sent as ``raw_input_contents``)."""
    return [
        triton.InferInput(
            name, list(values.shape), DATATYPES[values.dtype.type]
        ).set_data_from_numpy(values)
        for name, values in arrays.items()
    ]


def http_answer(
    http_client: triton_http.InferenceServerClient, model: str, arrays: dict[str, np.ndarray]
) -> triton_http.InferResult:
    """The HTTP ``/v2`` answer to the same tensors (binary)."""
    inputs = [
        triton_http.InferInput(
            name, list(values.shape), DATATYPES[values.dtype.type]
        ).set_data_from_numpy(values, binary_data=True)
        for name, values in arrays.items()
    ]
    return http_client.infer(model, inputs)


def typed_request(model: str, arrays: dict[str, np.ndarray], **fields: Any) -> Any:
    """A ``ModelInferRequest`` carrying ``arrays`` in each datatype's typed contents field."""
    request = pb.ModelInferRequest(model_name=model, **fields)
    for name, values in arrays.items():
        datatype = DATATYPES[values.dtype.type]
        entry = request.inputs.add(name=name, datatype=datatype, shape=values.shape)
        getattr(entry.contents, TYPED_FIELD[datatype]).extend(values.reshape(-1).tolist())
    return request


def typed_output(response: Any, name: str) -> np.ndarray:
    """Output ``name`` of a typed answer, as an array of its shape."""
    (output,) = [o for o in response.outputs if o.name == name]
    values = getattr(output.contents, TYPED_FIELD[output.datatype])
    return np.array(values, dtype=np.float32).reshape(list(output.shape))


def refusal(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_the_service_process_keeps_the_stubs_out_until_it_serves_grpc() -> None:
    """Our stubs and tritonclient's share message names in protobuf's default pool: the
    service imports its stubs only when it starts the gRPC server, never at import."""
    import service.service  # noqa: F401

    assert "service.grpc_api.grpc_predict_v2_pb2" not in sys.modules


def test_probes_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "dlserve"
    assert metadata["version"]


def test_model_metadata_and_readiness(
    client: triton.InferenceServerClient, stored_models: dict
) -> None:
    version = stored_models[FRAUD]["version"]
    metadata = client.get_model_metadata(FRAUD, as_json=True)
    assert metadata["name"] == FRAUD and metadata["versions"] == [version]
    assert metadata["platform"] == "onnx_onnxv1"
    assert metadata["inputs"] == [
        {"name": "numeric", "datatype": "FP32", "shape": ["-1", "10"]},
        {"name": "categorical", "datatype": "INT64", "shape": ["-1", "1"]},
    ]
    assert {o["name"] for o in metadata["outputs"]} == {"fraud_probability", "anomaly_score"}
    assert client.get_model_metadata(FRAUD, model_version=version, as_json=True) == metadata
    error = refusal(client.get_model_metadata, FRAUD, model_version="0")
    assert error.status() == "StatusCode.NOT_FOUND" and "has no version '0'" in error.message()
    for name in (FRAUD, IMAGES, "sentiment-rnn", "image-generator"):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=stored_models[name]["version"])
    assert not client.is_model_ready(FRAUD, model_version="0")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("text-generator")  # stepwise: no tensor route


def test_raw_fraud_inference_answers_as_http_v2_and_counts(
    client: triton.InferenceServerClient,
    http_client: triton_http.InferenceServerClient,
    server: LocalServer,
    stored_models: dict,
) -> None:
    arrays = fraud_arrays(30)
    before = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="ok")
    result = client.infer(FRAUD, grpc_inputs(arrays), request_id="g-1")
    after = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="ok")
    assert after == before + 1
    response = result.get_response()
    assert response.model_version == stored_models[FRAUD]["version"] and response.id == "g-1"
    assert [o.name for o in response.outputs] == ["fraud_probability", "anomaly_score"]
    assert len(response.raw_output_contents) == 2  # raw in, raw out
    expected = http_answer(http_client, FRAUD, arrays)
    for name in ("fraud_probability", "anomaly_score"):
        got = result.as_numpy(name)
        assert got.shape == (30,) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected.as_numpy(name), rtol=1e-6)
    only = client.infer(
        FRAUD, grpc_inputs(arrays), outputs=[triton.InferRequestedOutput("anomaly_score")]
    )
    assert [o.name for o in only.get_response().outputs] == ["anomaly_score"]


def test_typed_fraud_inference_answers_typed_contents_as_http_v2(
    stub: pb_grpc.GRPCInferenceServiceStub, http_client: triton_http.InferenceServerClient
) -> None:
    arrays = fraud_arrays(12)
    response = stub.ModelInfer(typed_request(FRAUD, arrays, id="typed"), timeout=30)
    assert response.id == "typed" and not response.raw_output_contents
    expected = http_answer(http_client, FRAUD, arrays)
    for name in ("fraud_probability", "anomaly_score"):
        np.testing.assert_allclose(typed_output(response, name), expected.as_numpy(name), rtol=1e-6)


def test_image_inference_raw_and_typed_answer_as_http_v2(
    client: triton.InferenceServerClient,
    http_client: triton_http.InferenceServerClient,
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    pixels, _ = load_test_images(5)
    arrays = {"images": pixels}
    expected = http_answer(http_client, IMAGES, arrays).as_numpy("probabilities")
    raw = client.infer(IMAGES, grpc_inputs(arrays)).as_numpy("probabilities")
    assert raw.shape == (5, 10)
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    typed = stub.ModelInfer(typed_request(IMAGES, arrays), timeout=30)
    np.testing.assert_allclose(typed_output(typed, "probabilities"), expected, rtol=1e-6)


def test_bad_inputs_are_invalid_argument_naming_the_input_and_the_rule(
    client: triton.InferenceServerClient,
    stub: pb_grpc.GRPCInferenceServiceStub,
    server: LocalServer,
) -> None:
    before = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="rejected")
    good = fraud_arrays(1)
    cases = {
        "numeric: datatype 'INT64'; the model takes FP32": {
            **good,
            "numeric": good["numeric"].astype(np.int64),
        },
        "numeric: shape [1, 9]; the model takes [-1, 10]": {
            **good,
            "numeric": good["numeric"][:, :9],
        },
        "numeric: 1001 rows; at most 1000 per request": fraud_arrays(fraud.MAX_ROWS + 1),
    }
    for message, arrays in cases.items():
        error = refusal(client.infer, FRAUD, grpc_inputs(arrays))
        assert error.status() == "StatusCode.INVALID_ARGUMENT"
        assert error.message().startswith(message), error.message()
    numeric = good["numeric"].copy()
    numeric[0, 0] = -5.0  # what the named route's schema refuses
    error = refusal(client.infer, FRAUD, grpc_inputs({**good, "numeric": numeric}))
    assert "numeric: row 0: amount: must be a finite number in [0, 1e+06]" in error.message()
    after = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="rejected")
    assert after == before + len(cases) + 1

    short = typed_request(FRAUD, good)
    del short.inputs[0].contents.fp32_contents[-1]
    wrong_field = typed_request(FRAUD, {**good, "numeric": good["numeric"].astype(np.int64)})
    wrong_field.inputs[0].datatype = "FP32"
    mixed = typed_request(FRAUD, good)
    mixed.raw_input_contents.extend([b"", b""])
    typed_cases = {
        "numeric: 9 values; shape [1, 10] holds 10": short,
        "numeric: data must be in contents.fp32_contents for FP32; got ['int64_contents']": (
            wrong_field
        ),
        "numeric: give raw_input_contents or typed contents, not both": mixed,
    }
    for message, request in typed_cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message


def test_unknown_model_or_version_is_not_found(client: triton.InferenceServerClient) -> None:
    for name in ("no-such-model", "text-generator"):
        error = refusal(client.infer, name, grpc_inputs(fraud_arrays(1)))
        assert error.status() == "StatusCode.NOT_FOUND" and name in error.message()
    error = refusal(client.infer, FRAUD, grpc_inputs(fraud_arrays(1)), model_version="0")
    assert error.status() == "StatusCode.NOT_FOUND"


def test_a_message_over_the_body_limit_is_resource_exhausted(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name=FRAUD)
    request.raw_input_contents.append(bytes(8 * 1024 * 1024 + 1))  # DLSERVE_MAX_BODY_BYTES + 1
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_grpc_bench_checks_its_answers_and_reports_both_protocols(
    server: LocalServer,
) -> None:
    args = grpc_vs_http.parse_args(
        ["--seconds", "0.2", "--passes", "1", "--concurrency", "2", "--quiet"]
    )
    lines = asyncio.run(grpc_vs_http.measure(server, args))
    rows = [line.split(" | ") for line in lines[2:]]
    assert [row[0].lstrip("| ") for row in rows] == [cell.label for cell in grpc_vs_http.cells()]
    assert all(float(row[2].replace(",", "")) > 0 < float(row[3].replace(",", "")) for row in rows)


@pytest.fixture(scope="module")
def keyed_empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server with an API key and no model in its store: nothing is ever ready."""
    store = tmp_path_factory.mktemp("empty-store")
    with LocalServer({"BENTOML_HOME": str(store), "DLSERVE_API_KEYS": KEY}) as running:
        yield running.wait("/livez")


def test_a_key_is_needed_but_for_the_probes(keyed_empty_server: LocalServer) -> None:
    client = triton.InferenceServerClient(keyed_empty_server.grpc_address)
    assert client.is_server_live()  # probes are open, as /v2/health/*
    for headers in (None, {"authorization": "Bearer not-the-key-at-all"}, {"authorization": KEY}):
        for call, args in ((client.get_server_metadata, ()), (client.is_model_ready, (FRAUD,))):
            error = refusal(call, *args, headers=headers)
            assert error.status() == "StatusCode.UNAUTHENTICATED"
            assert "authorization: Bearer KEY" in error.message()
    good = {"authorization": f"Bearer {KEY}"}
    assert client.get_server_metadata(headers=good).name == "dlserve"
    client.close()


def test_a_model_that_is_not_loaded_is_unavailable_with_a_retry_hint(
    keyed_empty_server: LocalServer,
) -> None:
    good = {"authorization": f"Bearer {KEY}"}
    client = triton.InferenceServerClient(keyed_empty_server.grpc_address)
    assert not client.is_server_ready()
    assert not client.is_model_ready(FRAUD, headers=good)
    error = refusal(client.get_model_metadata, FRAUD, headers=good)
    assert error.status() == "StatusCode.UNAVAILABLE" and "not loaded" in error.message()
    client.close()
    with grpc.insecure_channel(keyed_empty_server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = typed_request(FRAUD, fraud_arrays(1))
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=tuple(good.items()), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details().startswith(f"model '{FRAUD}' is not loaded")
    assert ("retry-after", "1") in caught.value.trailing_metadata()


def test_sigterm_makes_the_server_unready_and_refuses_new_inference(
    stored_models: dict,
) -> None:
    env = {"DLSERVE_MODELS": "fraud", "DLSERVE_SHUTDOWN_DELAY_S": "30"}
    with LocalServer(env) as running:
        running.wait("/readyz")
        client = triton.InferenceServerClient(running.grpc_address)
        assert client.is_server_ready()
        assert client.infer(FRAUD, grpc_inputs(fraud_arrays(2))).as_numpy("anomaly_score").size
        os.kill(running.process.pid, signal.SIGTERM)  # as tini forwards it
        deadline = time.monotonic() + 30
        while client.is_server_ready():  # the worker marks itself draining on the signal
            assert time.monotonic() < deadline, "ServerReady stayed true after SIGTERM"
        with grpc.insecure_channel(running.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(typed_request(FRAUD, fraud_arrays(1)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "this worker is shutting down (SIGTERM); retry"
        assert ("retry-after", "1") in caught.value.trailing_metadata()
        client.close()


def test_the_grpc_bench_compares_dlserve_with_the_faster_triton() -> None:
    cell = grpc_vs_http.Cell("fraud, 2", FRAUD, {"x": np.zeros((2, 1), np.float32)}, "y")
    rates = {
        "dlserve gRPC": 100,
        "dlserve HTTP": 200,
        "Triton 1 instance gRPC": 50,
        "Triton 2 instances gRPC": 400,
    }
    results = {
        (cell.label, name, 16): grpc_vs_http.Measured(calls=rate, seconds=1.0, latencies=[0.001])
        for name, rate in rates.items()
    }
    header, _, row = grpc_vs_http.table([cell], results, [16], list(rates))
    names, columns = (line.strip("| ").split(" | ") for line in (header, row))
    named = dict(zip(names, columns, strict=True))
    assert named["gRPC / HTTP"] == "0.50"
    assert named["gRPC / faster Triton gRPC"] == "0.25"
    assert named["dlserve gRPC rows/s"] == "200"
