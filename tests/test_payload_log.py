"""Payload log parts in-process: redaction, rejections, sampling, the writer, retention, replay
rows and the comparison's statistic (the HTTP behaviour: tests/test_payload_log_http.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from service.batch.compare import compare_field, psi
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
    acknowledged_parts,
    logged_answers,
    read_records,
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
