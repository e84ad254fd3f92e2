"""Open Inference Protocol tensors (``service.tensors``) and the areas' value checks, in process."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from harness.payloads import transactions
from service import tensors
from service.areas import fraud
from service.errors import RequestInputError

SPECS = [
    {"name": "numeric", "dtype": "float32", "shape": ["batch", 10]},
    {"name": "categorical", "dtype": "int64", "shape": ["batch", 1]},
]
OUTPUTS = ["fraud_probability", "anomaly_score"]


def json_input(name: str, values: np.ndarray, **changes: Any) -> dict[str, Any]:
    entry = {
        "name": name,
        "datatype": tensors.datatype(values.dtype),
        "shape": list(values.shape),
        "data": values.tolist(),
    }
    return entry | changes


def binary_input(name: str, values: np.ndarray) -> dict[str, Any]:
    entry = json_input(name, values, parameters={"binary_data_size": values.nbytes})
    del entry["data"]
    return entry


def arrays(rows: int = 2) -> dict[str, np.ndarray]:
    return fraud.to_arrays([fraud.Transaction(**row) for row in transactions(rows)])


def parse(request: dict[str, Any], binary: bytes = b"", max_rows: int = 1000) -> Any:
    header = orjson.dumps(request)
    length = str(len(header)) if binary else None
    return tensors.parse_request(header + binary, length, SPECS, OUTPUTS, max_rows)


def refused(request: dict[str, Any], binary: bytes = b"", **kwargs: Any) -> RequestInputError:
    with pytest.raises(RequestInputError) as caught:
        parse(request, binary, **kwargs)
    return caught.value


def test_json_and_binary_inputs_decode_to_the_same_arrays() -> None:
    given = arrays()
    as_json = parse({"inputs": [json_input(n, v) for n, v in given.items()]})
    as_binary = parse(
        {"inputs": [binary_input(n, v) for n, v in given.items()]},
        b"".join(v.tobytes() for v in given.values()),
    )
    for parsed in (as_json, as_binary):
        assert parsed.inputs.keys() == given.keys()
        for name, values in given.items():
            assert parsed.inputs[name].dtype == values.dtype
            np.testing.assert_array_equal(parsed.inputs[name], values)
    assert as_json.outputs == [(name, False) for name in OUTPUTS]


def test_nested_or_flat_json_data_both_fill_the_shape() -> None:
    numeric, categorical = arrays(1).values()
    flat = json_input("numeric", numeric, data=numeric.ravel().tolist())
    parsed = parse({"inputs": [flat, json_input("categorical", categorical)]})
    np.testing.assert_array_equal(parsed.inputs["numeric"], numeric)


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"datatype": "FP64"}, ["numeric"], "datatype 'FP64'; the model takes FP32"),
        ({"shape": [2, 9]}, ["numeric"], "the model takes [-1, 10]"),
        ({"shape": [0, 10]}, ["numeric"], "any size of at least 1"),
        ({"shape": [3, 10]}, ["numeric"], "20 values; shape [3, 10] holds 30"),
        ({"data": [["a"] * 10] * 2}, ["numeric"], "not FP32"),
        ({"data": [[1.0] * 10, [1.0] * 9]}, ["numeric"], "evenly nested"),
        ({"data": [[1e39] * 10] * 2}, ["numeric"], "finite"),
        ({"data": "1,2"}, ["numeric"], "JSON array"),
    ],
)
def test_a_bad_input_is_refused_naming_it(change: dict, loc: list, message: str) -> None:
    numeric, categorical = arrays().values()
    error = refused(
        {
            "inputs": [
                json_input("numeric", numeric, **change),
                json_input("categorical", categorical),
            ]
        }
    )
    assert error.loc == loc and message in str(error)


def test_integers_must_be_whole_and_in_the_datatype_range() -> None:
    numeric, _ = arrays(1).values()
    for data, message in (
        ([[1.5]], "not INT64"),
        ([[2**64 - 1]], "integers from -9223372036854775808"),
    ):
        error = refused(
            {
                "inputs": [
                    json_input("numeric", numeric),
                    {"name": "categorical", "datatype": "INT64", "shape": [1, 1], "data": data},
                ]
            }
        )
        assert error.loc == ["categorical"] and message in str(error)
    pixels = [{"name": "images", "dtype": "uint8", "shape": ["batch", 2]}]
    body = orjson.dumps(
        {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 2], "data": [1, 300]}]}
    )
    with pytest.raises(RequestInputError, match="integers from 0 to 255"):
        tensors.parse_request(body, None, pixels, ["x"], 10)


def test_binary_sizes_must_match_the_shape_and_the_body() -> None:
    numeric, categorical = arrays(1).values()
    request = {
        "inputs": [binary_input("numeric", numeric), binary_input("categorical", categorical)]
    }
    data = numeric.tobytes() + categorical.tobytes()
    assert "short" in str(refused(request, data[:-1]))
    assert "after the inputs" in str(refused(request, data + b"\0"))
    request["inputs"][0]["parameters"]["binary_data_size"] = 36
    error = refused(request, data)
    assert error.loc == ["numeric"] and "is 40 bytes" in str(error)
    nan = np.full_like(numeric, np.nan)
    request["inputs"][0]["parameters"]["binary_data_size"] = 40
    assert "finite" in str(refused(request, nan.tobytes() + categorical.tobytes()))
    request["inputs"][0]["parameters"]["binary_data_size"] = 40.0  # a float: was a 500
    error = refused(request, data)
    assert error.loc == ["numeric"] and "binary_data_size 40.0" in str(error)


@pytest.mark.parametrize("length", ["99999", "²", "٣", "9" * 5000, "-1", "1e3", "", " 12"])
def test_the_header_length_is_a_byte_count_within_the_body(length: str) -> None:
    """Unicode digits and more than 4,300 digits used to raise from int(): a 500."""
    request = {"inputs": [json_input(n, v) for n, v in arrays(1).items()]}
    body = orjson.dumps(request)
    with pytest.raises(RequestInputError) as caught:
        tensors.parse_request(body, length, SPECS, OUTPUTS, 10)
    assert caught.value.loc == ["Inference-Header-Content-Length"]
    assert str(caught.value) == f"must be an integer from 0 to {len(body)}"
    assert tensors.parse_request(body, "0" * 5000 + str(len(body)), SPECS, OUTPUTS, 10)


def test_an_output_that_is_not_finite_is_never_sent() -> None:
    request = tensors.InferRequest(None, {}, [("anomaly_score", False)])
    outputs = {"anomaly_score": np.array([1.0, np.nan], dtype=np.float32)}
    with pytest.raises(RequestInputError) as caught:
        tensors.encode_response("fraud-scorer", "v1", request, outputs)
    assert caught.value.loc == ["outputs", "anomaly_score"] and "not finite" in str(caught.value)


def test_rows_axes_and_inputs_are_checked_across_the_request() -> None:
    numeric, categorical = arrays(3).values()
    both = [json_input("numeric", numeric), json_input("categorical", categorical)]
    assert "at most 2 per request" in str(refused({"inputs": both}, max_rows=2))
    mismatched = [json_input("numeric", numeric), json_input("categorical", categorical[:2])]
    assert "axis 'batch' is 2 here but 3 in 'numeric'" in str(refused({"inputs": mismatched}))
    assert "missing ['categorical']" in str(refused({"inputs": both[:1]}))
    assert "more than once" in str(refused({"inputs": [*both, both[0]]}))
    assert "unknown input 'x'" in str(refused({"inputs": [*both, {"name": "x"}]}))


def test_requested_outputs_choose_names_order_and_binary() -> None:
    given = [json_input(n, v) for n, v in arrays().items()]
    everything_binary = parse({"inputs": given, "parameters": {"binary_data_output": True}})
    assert everything_binary.outputs == [(name, True) for name in OUTPUTS]
    chosen = parse(
        {
            "inputs": given,
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "anomaly_score", "parameters": {"binary_data": False}}],
        }
    )
    assert chosen.outputs == [("anomaly_score", False)]
    assert "unknown or repeated" in str(refused({"inputs": given, "outputs": [{"name": "x"}]}))
    classify = [{"name": "anomaly_score", "parameters": {"classification": 2}}]
    assert "not supported" in str(refused({"inputs": given, "outputs": classify}))
    flag = {"binary_data_output": "yes"}
    assert refused({"inputs": given, "parameters": flag}).loc == [
        "parameters",
        "binary_data_output",
    ]


def test_the_answer_carries_json_and_binary_outputs_in_order() -> None:
    request = tensors.InferRequest("7", {}, [("anomaly_score", True), ("fraud_probability", False)])
    outputs = {
        "fraud_probability": np.array([0.25, 0.5], dtype=np.float32),
        "anomaly_score": np.array([1.5, 2.5], dtype=np.float32),
    }
    body, length = tensors.encode_response("fraud-scorer", "v1", request, outputs)
    assert length is not None
    header = orjson.loads(body[:length])
    assert header["id"] == "7" and header["model_version"] == "v1"
    binary, as_json = header["outputs"]
    assert binary == {
        "name": "anomaly_score",
        "datatype": "FP32",
        "shape": [2],
        "parameters": {"binary_data_size": 8},
    }
    assert as_json["data"] == [0.25, 0.5]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), [1.5, 2.5])


def test_fraud_tensors_keep_the_transaction_rules() -> None:
    given = arrays(3)
    fraud.check_tensors(given, None)  # type: ignore[arg-type]
    hour = fraud.FRAUD_SPEC.numeric.index("hour")
    given["numeric"][2, hour] = 24
    with pytest.raises(RequestInputError, match=r"row 2: hour: must be an integer in \[0, 23\]"):
        fraud.check_tensors(given, None)  # type: ignore[arg-type]
    given = arrays(1)
    given["categorical"][0, 0] = len(fraud.MERCHANT_CATEGORIES)
    with pytest.raises(RequestInputError, match="merchant_category codes are 0 to"):
        fraud.check_tensors(given, None)  # type: ignore[arg-type]


def test_the_matrix_check_words_the_first_broken_rule_as_the_batch_check() -> None:
    numeric = arrays(4)["numeric"]
    names = fraud.FRAUD_SPEC.numeric
    spoilt = {"amount": -1, "hour": 7.5, "card_present": 2, "account_age_days": 40_000}
    spoilt_rows = []
    for name, value in spoilt.items():
        row = numeric[:1].copy()
        row[0, names.index(name)] = value
        spoilt_rows.append(row)
    swapped = numeric[:1].copy()
    swapped[0, names.index("txn_count_1h")] = swapped[0, names.index("txn_count_24h")] + 1
    for matrix in [*spoilt_rows, swapped]:
        both = np.concatenate([numeric, matrix])
        columns = {name: both[:, i] for i, name in enumerate(names)}
        category = [fraud.MERCHANT_CATEGORIES[0]] * len(both)
        table = pa.table(columns | {"merchant_category": category})
        reasons = fraud.COLUMN_RULES.validate(table)[1]
        assert fraud.COLUMN_RULES.first_broken(both, names) == (4, reasons[4])
    assert fraud.COLUMN_RULES.first_broken(numeric, names) is None
