"""Payload log parts in-process: redaction, rejections, sampling, the writer, retention, replay
rows and the comparison's statistic (the HTTP behaviour: tests/test_payload_log_http.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.features import FRAUD_SPEC
from service.batch import compare
from service.batch.__main__ import main as batch_main
from service.batch.adapter import find_adapter
from service.batch.compare import compare_field, psi
from service.batch.job import load_for_batch
from service.batch.tensor_adapter import validate_rows
from service.payload_log.middleware import note_versions, sampled
from service.payload_log.records import (
    NOT_RECORDED,
    REDACTED,
    Captured,
    recorded_body,
    redact,
    rejection,
)
from service.payload_log.replay import (
    PAYLOAD_ROW,
    ROUTES,
    V2,
    acknowledged_parts,
    logged_answers,
    read_records,
    replay,
    replay_rows,
)
from service.payload_log.writer import (
    ACKNOWLEDGED,
    DROPPED,
    PAUSED_ENV,
    PayloadWriter,
    Retention,
    retain,
)
from service.routing import _ROUTING, RequestRouting, note_answered, note_shadow
from tests.multipart_bodies import MULTIPART, form_body, form_part
from tests.payload_records import (
    FLOAT32_ROUNDING,
    assert_same_answers,
    fraud_arrays,
    log_writer,
    v2_record,
)

FOREVER = Retention(max_bytes=10**12, max_age_s=10**9)


def _captured(
    request_id: str, rows: list[dict], results: list[dict], status: int = 200
) -> Captured:
    record = Captured(
        request_id,
        time.time(),
        "/v1/fraud/score",
        "fraud-scorer",
        "application/json",
        json.dumps({"transactions": rows}).encode(),
    )
    record.status, record.response_type = status, "application/json"
    record.response = json.dumps(
        {"model": {"name": "fraud-scorer", "version": "v1"}, "results": results}
    ).encode()
    return record


def test_redaction_replaces_named_keys_at_any_depth_and_named_tensors() -> None:
    body = {
        "transactions": [{"amount": 3.0, "hour": 2}, {"amount": 4.0, "hour": 5}],
        "inputs": [{"name": "numeric", "data": [1, 2]}, {"name": "categorical", "data": [0]}],
    }
    redacted = redact(body, frozenset({"amount", "categorical"}))
    assert redacted["transactions"] == [
        {"amount": REDACTED, "hour": 2},
        {"amount": REDACTED, "hour": 5},
    ]
    assert redacted["inputs"] == [
        {"name": "numeric", "data": [1, 2]},
        {"name": "categorical", "data": REDACTED},
    ]


def test_a_body_that_cannot_be_redacted_is_not_recorded() -> None:
    upload = b"--boundary\r\n...image bytes..."
    assert recorded_body(upload, "multipart/form-data", frozenset({"x"})) == NOT_RECORDED
    assert recorded_body(upload, "multipart/form-data", frozenset()) == upload
    assert json.loads(recorded_body(b'{"x": 1, "y": 2}', "application/json", frozenset({"x"}))) == {
        "x": REDACTED,
        "y": 2,
    }


def test_a_rejection_names_its_field_and_rule_in_each_protocol_shape() -> None:
    dlserve = {
        "error": "e",
        "detail": [{"loc": ["transactions", 1, "amount"], "msg": "must be >= 0"}],
    }
    assert rejection(400, json.dumps(dlserve).encode()) == ("transactions.1.amount", "must be >= 0")
    openai = {"error": {"message": "must be at most 5", "param": "logprobs", "type": "x"}}
    assert rejection(400, json.dumps(openai).encode()) == ("logprobs", "must be at most 5")
    assert rejection(400, b'{"error": "numeric: row 0: bad"}') == (None, "numeric: row 0: bad")
    assert rejection(200, json.dumps(dlserve).encode()) == (None, None)


def test_sampling_is_a_pure_function_of_the_id() -> None:
    ids = [f"request-{i}" for i in range(2000)]
    chosen = [i for i in ids if sampled(i, 0.1)]
    assert chosen == [i for i in ids if sampled(i, 0.1)]  # the same choice every time
    assert 120 < len(chosen) < 280  # about a tenth
    assert not any(sampled(i, 0.0) for i in ids)
    assert all(sampled(i, 1.0) for i in ids)
    assert set(chosen) <= {i for i in ids if sampled(i, 0.5)}  # a larger share adds requests


def test_a_record_names_the_version_that_answered_and_its_shadow() -> None:
    """The versions come from the request's routing record (``service.routing``): the notes do
    nothing outside a request, and a record takes the last model noted and that model's
    shadow."""
    note_answered("m", "outside")  # no request: nothing happens, nothing raises
    routing = RequestRouting(key=None)
    token = _ROUTING.set(routing)
    try:
        note_answered("image-generator", "g1")
        note_answered("fraud-scorer", "v2")
        note_shadow("fraud-scorer", "v3")
    finally:
        _ROUTING.reset(token)
    record = Captured("r", 0.0, "/v1/fraud/score", "fraud-scorer", "application/json", b"{}")
    note_versions(record, routing)
    assert (record.answered_model, record.version, record.shadow_version) == (
        "fraud-scorer",
        "v2",
        "v3",
    )
    untouched = Captured("r", 0.0, "/v1/fraud/score", "fraud-scorer", "application/json", b"{}")
    note_versions(untouched, None)
    assert untouched.version is None and untouched.shadow_version is None


def test_the_writer_acknowledges_parts_in_its_manifest(tmp_path: Path) -> None:
    writer = PayloadWriter(
        tmp_path, frozenset(), 16, 10**6, part_records=2, flush_s=3600, retention=FOREVER
    )
    before = ACKNOWLEDGED.labels(model="fraud-scorer")._value.get()
    for i in range(5):
        writer.offer(_captured(f"r{i}", [{"amount": float(i)}], [{"fraud_probability": 0.5}]))
    writer.close()  # the fifth record is written at close, in a part of its own
    parts = acknowledged_parts(tmp_path)
    assert [p.name for p in parts] == [
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
    ]
    records = read_records(tmp_path)
    assert records["request_id"].to_pylist() == [f"r{i}" for i in range(5)]
    assert records["version"].to_pylist() == ["v1"] * 5  # from the answer's model field
    assert ACKNOWLEDGED.labels(model="fraud-scorer")._value.get() - before == 5


def test_a_part_no_manifest_lists_is_never_read(tmp_path: Path) -> None:
    writer = PayloadWriter(
        tmp_path, frozenset(), 16, 10**6, part_records=1, flush_s=3600, retention=FOREVER
    )
    writer.offer(_captured("kept", [{"amount": 1.0}], [{"fraud_probability": 0.5}]))
    writer.close()
    (part,) = acknowledged_parts(tmp_path)
    (part.parent / "part-000001.parquet").write_bytes(part.read_bytes())  # written, not recorded
    assert read_records(tmp_path)["request_id"].to_pylist() == ["kept"]


def test_a_full_queue_drops_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PAUSED_ENV, "1")
    writer = PayloadWriter(
        tmp_path, frozenset(), 3, 10**6, part_records=1, flush_s=1, retention=FOREVER
    )
    dropped = DROPPED.labels(model="fraud-scorer", reason="queue_full")
    before = dropped._value.get()
    for i in range(10):
        writer.offer(_captured(f"r{i}", [], []))  # returns at once: nothing consumes the queue
    assert dropped._value.get() - before == 7
    assert writer.queue.qsize() == 3


def test_the_queue_is_bounded_by_bytes_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PAUSED_ENV, "1")
    writer = PayloadWriter(
        tmp_path, frozenset(), 100, 2500, part_records=1, flush_s=1, retention=FOREVER
    )
    record = _captured("r", [{"amount": 1.0}] * 40, [])  # about 700 bytes of bodies
    assert 600 < record.size < 1200
    dropped = DROPPED.labels(model="fraud-scorer", reason="queue_full")
    before = dropped._value.get()
    for _ in range(5):
        writer.offer(record)
    assert writer.queue.qsize() == 2500 // record.size
    assert dropped._value.get() - before == 5 - 2500 // record.size


def test_retention_deletes_by_age_then_oldest_beyond_the_size(tmp_path: Path) -> None:
    now = time.time()
    folders = [tmp_path / "host-1-1", tmp_path / "host-2-2"]
    sizes = {}
    for age, folder, name in [
        (500, 0, "part-000000.parquet"),
        (300, 1, "part-000000.parquet"),
        (200, 0, "part-000001.parquet"),
        (100, 1, "part-000001.parquet"),
    ]:
        folders[folder].mkdir(exist_ok=True)
        path = folders[folder] / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - age, now - age))
        sizes[path] = age
    deleted = retain(tmp_path, Retention(max_bytes=150, max_age_s=400), now)
    assert [sizes[path] for path in deleted] == [500, 300, 200]  # too old, then the oldest
    assert [path.name for path in tmp_path.glob("*/part-*")] == ["part-000001.parquet"]


def test_replay_rows_and_logged_answers_share_their_keys(tmp_path: Path) -> None:
    writer = PayloadWriter(
        tmp_path, frozenset(), 16, 10**6, part_records=10, flush_s=3600, retention=FOREVER
    )
    writer.offer(_captured("a", [{"amount": 1.0}, {"amount": 2.0}], [{"p": 0.1}, {"p": 0.2}]))
    writer.offer(_captured("b", [{"amount": -1.0}], [], status=400))  # refused: not replayed
    writer.close()
    records = read_records(tmp_path)
    rows = replay_rows(records, "fraud-scorer", ("amount",))
    assert rows.to_pylist() == [
        {PAYLOAD_ROW: "a/0", "amount": 1.0},
        {PAYLOAD_ROW: "a/1", "amount": 2.0},
    ]
    answers = logged_answers(records, "fraud-scorer")
    assert answers.to_pylist() == [
        {PAYLOAD_ROW: "a/0", "logged_version": "v1", "p": 0.1},
        {PAYLOAD_ROW: "a/1", "logged_version": "v1", "p": 0.2},
    ]


def test_psi_is_zero_for_the_same_values_and_large_for_a_shift() -> None:
    values = np.random.default_rng(0).uniform(size=5000)
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)
    assert psi(values, values * 0.5) > 0.25


def test_a_redacted_field_is_not_compared() -> None:
    assert compare_field(
        "s", pa.chunked_array([[REDACTED] * 3]), pa.chunked_array([[0.1] * 3])
    ).redacted
    labels = compare_field(
        "c", pa.chunked_array([["a", "b", "a", "b"]]), pa.chunked_array([["a", "b", "b", "b"]])
    )
    assert labels.agreement == 0.75


def test_v2_records_replay_as_rows_of_the_graph_inputs(tmp_path: Path) -> None:
    """JSON and binary V2 records give one row per tensor row, keyed as named-route rows, and
    the answer's outputs per row; the other records are counted, with their reason."""
    writer = log_writer(tmp_path)
    json_in, binary_in = fraud_arrays(2, seed=1), fraud_arrays(3, seed=2)
    answers = {
        "fraud_probability": np.array([[0.125], [0.7], [0.01]], np.float32),
        "anomaly_score": np.array([1.5, 2.25, 3.0], np.float32),
    }
    json_out = {name: values[:2] for name, values in answers.items()}
    writer.offer(v2_record("j", json_in, json_out, binary=False))
    writer.offer(v2_record("b", binary_in, answers, binary=True))
    writer.offer(_captured("n", [{"amount": 1.0}], [{"p": 0.1}]))  # a named route's
    redacted = v2_record("r", json_in, json_out, binary=False)
    redacted.request = recorded_body(redacted.request, "application/json", frozenset({"numeric"}))
    writer.offer(redacted)
    writer.close()
    replayed = replay(read_records(tmp_path), "fraud-scorer", V2)
    rows = replayed.rows.to_pylist()
    assert [row[PAYLOAD_ROW] for row in rows] == ["j/0", "j/1", "b/0", "b/1", "b/2"]
    sources = [(json_in, 0), (json_in, 1), (binary_in, 0), (binary_in, 1), (binary_in, 2)]
    for row, (given, position) in zip(rows, sources, strict=True):
        numeric = np.array(row["numeric"], np.float32)
        assert numeric.tobytes() == given["numeric"][position].tobytes()
        assert row["categorical"] == given["categorical"][position].tolist()
    logged = replayed.answers.to_pylist()
    assert [answer["fraud_probability"] for answer in logged] == [
        float(np.float32(value)) for value in (0.125, 0.7, 0.125, 0.7, 0.01)
    ]
    assert {answer["logged_version"] for answer in logged} == {"v1"}
    assert replayed.skipped == {
        "named-route records (replay them with --replay routes)": 1,
        "V2 tensors: input 'numeric' is redacted (DLSERVE_PAYLOAD_LOG_REDACT)": 1,
    }
    assert replayed.note is not None and replayed.note.startswith("2 answered records")


def test_an_upload_replays_as_its_file_unless_redaction_kept_it_out(tmp_path: Path) -> None:
    """An upload's file is its row (the ``image`` column) beside the answer's fields; with
    fields redacted the body is not recorded, and the replay says so."""
    image = bytes(range(256)) * 4  # any bytes: the parser must keep them exactly
    answer = {"model": {"name": "image-classifier", "version": "v1"}, "label": "Bag"}

    def upload(request_id: str) -> Captured:
        record = Captured(
            request_id,
            time.time(),
            "/v1/images/classify",
            "image-classifier",
            MULTIPART,
            form_body(form_part("image", image)),
        )
        record.status, record.response_type = 200, "application/json"
        record.response, record.version = json.dumps(answer).encode(), "v1"
        return record

    for folder, fields in ((tmp_path / "kept", frozenset()), (tmp_path / "redacted", {"x"})):
        writer = log_writer(folder, frozenset(fields))
        writer.offer(upload("u"))
        writer.close()
    kept = replay(read_records(tmp_path / "kept"), "image-classifier", ROUTES, ("image",))
    assert kept.rows.to_pylist() == [{PAYLOAD_ROW: "u/0", "image": image}]
    assert kept.answers.to_pylist() == [
        {PAYLOAD_ROW: "u/0", "logged_version": "v1", "label": "Bag"}
    ]
    assert kept.skipped == {}
    dropped = replay(read_records(tmp_path / "redacted"), "image-classifier", ROUTES, ("image",))
    assert dropped.rows.num_rows == 0
    assert dropped.skipped == {
        "the request was not recorded (not JSON while DLSERVE_PAYLOAD_LOG_REDACT is set)": 1
    }


def test_vectors_are_compared_over_all_their_values() -> None:
    logged = pa.chunked_array([pa.array([[0.1, 0.9], [0.5, 0.5]], pa.list_(pa.float32()))])
    same = compare_field("probabilities", logged, logged)
    assert same.max_difference == 0.0 and same.psi == pytest.approx(0.0, abs=1e-12)
    shifted = pa.chunked_array([pa.array([[0.3, 0.7], [0.5, 0.5]], pa.list_(pa.float32()))])
    moved = compare_field("probabilities", logged, shifted)
    assert moved.max_difference == pytest.approx(0.2) and moved.mean_difference == pytest.approx(
        0.1
    )


def test_a_v2_replay_scores_the_logged_tensors_as_the_version_answered(
    fraud_model: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored version's own answers, logged as JSON and binary V2 records, replayed with
    the same version: every row agrees (``assert_same_answers``); a row the version refuses is
    rejected with the area's rule."""
    ready = load_for_batch(find_adapter("fraud-scorer"))
    writer = log_writer(tmp_path / "log")
    for position, binary in enumerate((False, True, False, True)):
        arrays = fraud_arrays(5, seed=position)
        outputs = ready.model.run(arrays)
        writer.offer(v2_record(f"r{position}", arrays, outputs, binary))
    refused = fraud_arrays(1, seed=9)
    refused["categorical"][:] = 99  # an unknown merchant code, as if another version took it
    answered = ready.model.run(fraud_arrays(1, seed=9))
    writer.offer(v2_record("refused", refused, answered, binary=False))
    writer.close()
    scores = tmp_path / "scores.parquet"
    job = ["--model", "fraud-scorer", "--input", str(tmp_path / "log"), "--output", str(scores)]
    assert batch_main([*job, "--replay", "v2", "--quiet"]) == 3  # one row rejected
    rejects = pq.read_table(tmp_path / "scores.rejects.parquet").to_pylist()
    assert [row[PAYLOAD_ROW] for row in rejects] == ["refused/0"]
    assert rejects[0]["reason"].startswith("categorical: row 0: merchant_category codes are")
    result = compare.compare(tmp_path / "log", scores)
    assert result.rows == 20 and result.kind == V2
    assert result.logged_versions == ["v1"] and result.candidate_version == ready.version
    assert_same_answers(result)
    assert batch_main([*job, "--quiet"]) == 2  # the routes replay: no named-route records
    assert "5 V2 tensor records (replay them with --replay v2)" in caplog.text


def test_a_field_redacted_in_some_records_only_does_not_stop_the_replay(tmp_path: Path) -> None:
    """A log spanning a change of DLSERVE_PAYLOAD_LOG_REDACT holds numbers and REDACTED in one
    field: the column is kept as text, and a request asking for fewer fields leaves nulls."""
    writer = log_writer(tmp_path)
    writer.offer(_captured("a", [{"amount": 1.0}], [{"p": 0.5, "q": 1}]))
    writer.offer(_captured("b", [{"amount": 2.0}], [{"p": REDACTED}]))
    writer.close()
    answers = replay(read_records(tmp_path), "fraud-scorer").answers.to_pylist()
    assert [(answer["p"], answer["q"]) for answer in answers] == [("0.5", 1), (REDACTED, None)]


def test_a_tensor_row_is_checked_as_the_v2_route_checks_a_request() -> None:
    """The V2 replay's validation, per row: the loaded version's datatype, shape and finite
    values, then the area's own check (here fraud's merchant codes), each reason naming the
    input; the valid rows keep their values."""
    width = len(FRAUD_SPEC.numeric)
    inputs = [
        {"name": "numeric", "dtype": "float32", "shape": ["batch", width]},
        {"name": "categorical", "dtype": "int64", "shape": ["batch", 1]},
    ]
    good = fraud_arrays(1, seed=3)
    numeric, code = good["numeric"][0].tolist(), good["categorical"][0].tolist()
    table = pa.table(
        {
            "numeric": [numeric, numeric[:-1], numeric, [*numeric[:-1], None], numeric],
            "categorical": [code, code, [99], code, [1, 2]],
        }
    )
    columns, reasons = validate_rows(
        "fraud-scorer", table, SimpleNamespace(metadata={"inputs": inputs})
    )
    assert reasons[0] is None
    assert columns["numeric"][0].tobytes() == good["numeric"][:1].tobytes()
    assert reasons[1].startswith(f"numeric: shape [1, {width - 1}]; the model takes [-1, {width}]")
    assert reasons[2].startswith("categorical: row 0: merchant_category codes are 0 to")
    assert reasons[3] == "numeric: data holds values that are not FP32"
    assert reasons[4].startswith("categorical: shape [1, 2]; the model takes [-1, 1]")


def test_an_image_v2_replay_compares_the_probability_vectors(
    image_model: dict, tmp_path: Path
) -> None:
    """Images sent as V2 tensors (JSON and binary), replayed with the version that answered:
    the ``probabilities`` vector of every image and its ``confidence`` as logged."""
    ready = load_for_batch(find_adapter("image-classifier"))
    writer = log_writer(tmp_path / "log")
    pixels = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    for position, (start, stop) in enumerate([(0, 3), (3, 7), (7, 12)]):
        arrays = {"images": pixels[start:stop]}
        answered = ready.model.run(arrays)
        writer.offer(v2_record(f"i{position}", arrays, answered, position == 1, ready.name))
    writer.close()
    scores = tmp_path / "images.parquet"
    job = ["--model", "image", "--replay", "v2", "--input", str(tmp_path / "log")]
    assert batch_main([*job, "--output", str(scores), "--quiet"]) == 0
    result = compare.compare(tmp_path / "log", scores)
    by_name = {field.name: field for field in result.fields}
    assert result.rows == 12 and set(by_name) == {"probabilities", "confidence"}
    assert by_name["probabilities"].max_difference <= FLOAT32_ROUNDING
    assert by_name["confidence"].max_difference <= FLOAT32_ROUNDING
