"""The Open Inference Protocol (/v2) over real HTTP, with the client Triton and KServe users
have (``tritonclient.http``): probes, metadata, JSON and binary tensors, every refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from core.model_store import load_model
from harness.http_checks import metric_value
from harness.images import b64, encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.areas import fraud, images, sentiment
from tests.sentiment_sentences import review_sentences

pytestmark = pytest.mark.http
FRAUD = "fraud-scorer"
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


def tensor(name: str, values: np.ndarray, binary: bool) -> triton.InferInput:
    """``values`` as the request input ``name``, in JSON or as binary data."""
    datatype = {np.float32: "FP32", np.int64: "INT64", np.uint8: "UINT8"}[values.dtype.type]
    return triton.InferInput(name, list(values.shape), datatype).set_data_from_numpy(
        values, binary_data=binary
    )


def fraud_inputs(rows: int, binary: bool = False) -> list[triton.InferInput]:
    arrays = fraud.to_arrays([fraud.Transaction(**row) for row in transactions(rows)])
    return [tensor(name, values, binary) for name, values in arrays.items()]


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> InferenceServerException:
    """The client's exception for a refused call."""
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_server_is_live_and_ready_and_names_the_binary_extension(
    client: triton.InferenceServerClient, server: LocalServer
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "dlserve"
    assert "binary_tensor_data" in metadata["extensions"]

    routes = httpx.get(server.url + "/docs.json", timeout=10).json()["paths"]
    assert "/v1/fraud/score" in routes  # the mount at / leaves BentoML's own pages whole


def test_model_metadata_gives_inputs_and_outputs_with_datatype_and_shape(
    client: triton.InferenceServerClient, fraud_model: dict
) -> None:
    version = fraud_model["version"]
    metadata = client.get_model_metadata(FRAUD)
    assert metadata["name"] == FRAUD
    assert metadata["versions"] == [version]
    assert metadata["inputs"] == [
        {"name": "numeric", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "categorical", "datatype": "INT64", "shape": [-1, 1]},
    ]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "fraud_probability": "FP32",
        "anomaly_score": "FP32",
    }
    assert client.get_model_metadata(FRAUD, model_version=version) == metadata
    assert refusal(client.get_model_metadata, FRAUD, model_version="0").status() == "404"


def test_model_ready_per_model_and_version(
    client: triton.InferenceServerClient, stored_models: dict
) -> None:
    for name in ("fraud-scorer", "image-classifier", "sentiment-rnn", "image-generator"):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=stored_models[name]["version"])
    assert not client.is_model_ready(FRAUD, model_version="0")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("text-generator")  # stepwise: no tensor route


def test_json_infer_answers_as_the_named_route(
    client: triton.InferenceServerClient, server: LocalServer, fraud_model: dict
) -> None:
    before = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="ok")
    result = client.infer(
        FRAUD,
        fraud_inputs(20),
        outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in ("fraud_probability",)],
        request_id="r-1",
    )
    response = result.get_response()
    assert response["model_version"] == fraud_model["version"]
    assert response["id"] == "r-1"
    assert [o["name"] for o in response["outputs"]] == ["fraud_probability"]
    assert "data" in response["outputs"][0]  # JSON, not binary
    probability = result.as_numpy("fraud_probability")
    assert probability.shape == (20,) and probability.dtype == np.float32
    after = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="ok")
    assert after == before + 1
    named = httpx.post(
        server.url + "/v1/fraud/score", json={"transactions": transactions(20)}, timeout=30
    ).json()["results"]
    np.testing.assert_allclose(probability, [r["fraud_probability"] for r in named], rtol=1e-6)


def test_binary_infer_of_images_answers_as_the_named_route(
    client: triton.InferenceServerClient, server: LocalServer
) -> None:
    pixels, _ = load_test_images(6)
    binary = client.infer("image-classifier", [tensor("images", pixels, binary=True)])
    assert all("binary_data_size" in o["parameters"] for o in binary.get_response()["outputs"])
    probabilities = binary.as_numpy("probabilities")
    assert probabilities.shape == (6, 10)
    np.testing.assert_array_equal(binary.as_numpy("confidence"), probabilities.max(axis=1))
    as_json = client.infer(
        "image-classifier",
        [tensor("images", pixels, binary=False)],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
    )
    np.testing.assert_array_equal(as_json.as_numpy("probabilities"), probabilities)
    named = httpx.post(
        server.url + images.BATCH_ROUTE + "?k=1",
        json={"images": [b64(encode(p)) for p in pixels]},
        timeout=30,
    ).json()["results"]
    assert [r["class_id"] for r in named] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(
        probabilities.max(axis=1), [r["top_k"][0]["probability"] for r in named], rtol=1e-6
    )


def test_token_ids_infer_answers_as_the_named_route(
    client: triton.InferenceServerClient, server: LocalServer, sentiment_models: dict
) -> None:
    texts = review_sentences()[:4]
    stored = load_model(f"sentiment-rnn:{sentiment_models['rnn']['version']}", "cpu")
    arrays, _ = sentiment.stored_encoder(stored).encode(texts)
    result = client.infer("sentiment-rnn", [tensor(n, v, True) for n, v in arrays.items()])
    positive = result.as_numpy("positive_probability")
    named = httpx.post(
        server.url + sentiment.ROUTE, json={"texts": texts, "model": "rnn"}, timeout=30
    ).json()["results"]
    expected = [
        r["probability"] if r["label"] == "positive" else 1 - r["probability"] for r in named
    ]
    np.testing.assert_allclose(positive, expected, rtol=1e-5)
    ids = arrays["input_ids"].copy()
    ids[0, 0] = 10**9
    error = refusal(
        client.infer,
        "sentiment-rnn",
        [tensor("input_ids", ids, True), tensor("attention_mask", arrays["attention_mask"], True)],
    )
    assert error.status() == "400" and error.message().startswith("input_ids: token ids")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_wrong_datatype_shape_or_size_is_a_400_naming_the_input(
    client: triton.InferenceServerClient, binary: bool
) -> None:
    good = fraud_inputs(1, binary)[1]
    as_int = tensor("numeric", np.ones((1, 10), dtype=np.int64), binary)
    narrow = tensor("numeric", np.ones((1, 9), dtype=np.float32), binary)
    short = tensor("numeric", np.ones((1, 10), dtype=np.float32), binary).set_shape([2, 10])
    cases = {
        "datatype 'INT64'; the model takes FP32": as_int,
        "shape [1, 9]; the model takes [-1, 10]": narrow,
        "shape [2, 10]": short,
    }
    for message, bad in cases.items():
        error = refusal(client.infer, FRAUD, [bad, good])
        assert error.status() == "400"
        assert error.message().startswith("numeric: ") and message in error.message()


def test_values_the_named_route_refuses_are_a_400_naming_the_input(
    client: triton.InferenceServerClient, server: LocalServer
) -> None:
    before = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="rejected")
    numeric, categorical = fraud.to_arrays([fraud.Transaction(**transactions(1)[0])]).values()
    numeric[0, 0] = -5.0
    error = refusal(
        client.infer,
        FRAUD,
        [tensor("numeric", numeric, True), tensor("categorical", categorical, True)],
    )
    assert error.status() == "400"
    assert "numeric: row 0: amount: must be a finite number in [0, 1e+06]" in error.message()
    after = metric_value(server, "dlserve_predictions_total", model=FRAUD, outcome="rejected")
    assert after == before + 1
    too_many = refusal(client.infer, FRAUD, fraud_inputs(fraud.MAX_ROWS + 1, binary=True))
    assert too_many.status() == "400" and "at most 1000 per request" in too_many.message()
    unknown_class = tensor("class_id", np.array([99], dtype=np.int64), False)
    noise = tensor("noise", np.zeros((1, 64), dtype=np.float32), False)
    error = refusal(client.infer, "image-generator", [noise, unknown_class])
    assert error.status() == "400" and error.message().startswith("class_id: ")


def test_an_unknown_model_version_or_path_is_a_404_in_the_protocol_shape(
    client: triton.InferenceServerClient, server: LocalServer
) -> None:
    for name in ("no-such-model", "text-generator"):
        error = refusal(client.infer, name, fraud_inputs(1))
        assert error.status() == "404" and name in error.message()
    error = refusal(client.infer, FRAUD, fraud_inputs(1), model_version="0")
    assert error.status() == "404"
    for response in (
        httpx.get(server.url + "/v2/models/no-such-model"),
        httpx.get(server.url + "/v2/no/such/path"),
        httpx.post(server.url + "/v2/models/fraud-scorer/infer", content=b"{not json"),
    ):
        assert response.status_code in (400, 404)
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str)  # the protocol's shape


def _fraud_body(numeric_size: object) -> tuple[bytes, bytes]:
    """A binary fraud request's JSON header (``numeric``'s ``binary_data_size`` as given) and
    its binary data."""
    numeric, categorical = fraud.to_arrays([fraud.Transaction(**transactions(1)[0])]).values()
    inputs = [
        {"name": "numeric", "datatype": "FP32", "shape": [1, 10]},
        {"name": "categorical", "datatype": "INT64", "shape": [1, 1]},
    ]
    inputs[0]["parameters"] = {"binary_data_size": numeric_size}
    inputs[1]["parameters"] = {"binary_data_size": categorical.nbytes}
    return orjson.dumps({"inputs": inputs}), numeric.tobytes() + categorical.tobytes()


def test_numbers_in_the_header_and_sizes_are_400s_naming_them(server: LocalServer) -> None:
    """Issue 20, row 4: each of these was a 500."""
    url = f"{server.url}/v2/models/{FRAUD}/infer"
    header, data = _fraud_body(40)
    body = header + data
    for length in (b"\xb2", "\u0663".encode(), b"9" * 5000, b"-1"):
        response = httpx.post(url, content=body, headers={HEADER_LENGTH: length}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": f"Inference-Header-Content-Length: must be an integer from 0 to {len(body)}"
        }
    header, data = _fraud_body(40.0)
    response = httpx.post(
        url, content=header + data, headers={HEADER_LENGTH: str(len(header))}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("numeric: binary_data_size 40.0; ")
    header, data = _fraud_body(40)
    answer = httpx.post(
        url, content=header + data, headers={HEADER_LENGTH: "0" * 4400 + str(len(header))}
    )
    assert answer.status_code == 200, answer.text


def test_generator_noise_beyond_its_range_is_refused_not_answered_with_nan(
    client: triton.InferenceServerClient,
) -> None:
    """Issue 20, row 14: noise of 3e38 made NaN images, sent as JSON nulls in an FP32 tensor."""
    classes = tensor("class_id", np.array([0], dtype=np.int64), False)
    huge = tensor("noise", np.full((1, 64), 3e38, dtype=np.float32), False)
    error = refusal(client.infer, "image-generator", [huge, classes])
    assert error.status() == "400" and error.message() == "noise: values must lie from -100 to 100"
    usual = tensor("noise", np.full((1, 64), 99.0, dtype=np.float32), True)
    images = client.infer("image-generator", [usual, classes]).as_numpy("images")
    assert images.shape == (1, 28, 28) and np.isfinite(images).all()


def test_any_method_on_an_unknown_path_is_404_and_a_known_path_405(server: LocalServer) -> None:
    """Issue 20, row 15: POST to an unknown /v2 path answered 405."""
    for method in ("POST", "PUT", "DELETE", "GET"):
        response = httpx.request(method, server.url + "/v2/no/such/path", timeout=30)
        assert response.status_code == 404, (method, response.text)
        assert response.json() == {"error": f"{method} /v2/no/such/path is not a route of /v2"}
    response = httpx.post(server.url + f"/v2/models/{FRAUD}", timeout=30)
    assert response.status_code == 405 and "GET" in response.headers["allow"]
    assert set(response.json()) == {"error"}


def test_a_model_that_is_not_loaded_is_not_ready_and_infer_answers_503(tmp_path: Path) -> None:
    with LocalServer({"BENTOML_HOME": str(tmp_path / "empty-store")}) as empty:
        empty.wait("/livez")
        client = triton.InferenceServerClient(empty.url.removeprefix("http://"))
        assert client.is_server_live() and not client.is_server_ready()
        assert not client.is_model_ready(FRAUD)
        # the readiness answers keep their JSON body (it was {"error": "{\"ready\":false}"})
        server_ready = httpx.get(empty.url + "/v2/health/ready", timeout=30)
        assert server_ready.status_code == 503 and server_ready.json() == {"ready": False}
        model_ready = httpx.get(empty.url + f"/v2/models/{FRAUD}/ready", timeout=30)
        assert model_ready.status_code == 503
        assert model_ready.json() == {"name": FRAUD, "ready": False}
        assert "x-dlserve-final-error" not in model_ready.headers
        assert refusal(client.get_model_metadata, FRAUD).status() == "503"
        error = refusal(client.infer, FRAUD, fraud_inputs(1))
        assert error.status() == "503" and "not loaded" in error.message()
        answer = httpx.post(empty.url + f"/v2/models/{FRAUD}/infer", json={"inputs": []})
        assert answer.headers["Retry-After"] == "1" and "not loaded" in answer.json()["error"]
        client.close()
