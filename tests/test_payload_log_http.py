"""Payload logs over real HTTP: what a record holds, sampling, drops, a crash, and replay (of
named routes, of V2 JSON and binary tensors, of image uploads; with the version that answered
and with a candidate).

Every wait is on the log's own state (its manifests and parts) or a metric, with a deadline;
no test waits for time to pass.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from PIL import Image

from harness.http_checks import metric_value
from harness.images import b64
from harness.local_server import LocalServer
from harness.payloads import SUSPICIOUS_TRANSACTION, transactions
from service.areas import fraud
from service.batch import compare
from service.batch.__main__ import main as batch_main
from service.payload_log.middleware import sampled
from service.payload_log.records import REDACTED
from service.payload_log.replay import read_records, worker_folders
from service.payload_log.writer import PAUSED_ENV
from service.tensors import datatype
from tests import model_versions as mv
from tests.payload_records import FLOAT32_ROUNDING, assert_same_answers

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
V2_ROUTE = "/v2/models/fraud-scorer/infer"
SHARE = 0.5
DEADLINE_S = 60


def _log_env(folder: Path, **settings: str) -> dict[str, str]:
    return {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_PAYLOAD_LOG_DIR": str(folder),
        **{f"DLSERVE_PAYLOAD_LOG_{name.upper()}": value for name, value in settings.items()},
    }


@pytest.fixture(scope="module")
def logged(stored_models: dict) -> Iterator[tuple[LocalServer, Path]]:
    """A server recording half of the fraud model's requests, redacting the answers'
    ``anomaly_score`` and the V2 input ``categorical``."""
    folder = Path(tempfile.mkdtemp(prefix="dlserve-payload-"))
    env = _log_env(
        folder, rate=f"fraud-scorer={SHARE}", redact="anomaly_score,categorical", flush_s="0.2"
    )
    with LocalServer(env=env) as running:
        yield running.wait("/readyz"), folder


def _recorded_ids(count: int, recorded: bool = True) -> list[str]:
    """``count`` fresh request ids that the log's hash does (or does not) sample at SHARE."""
    found: list[str] = []
    while len(found) < count:
        candidate = uuid.uuid4().hex
        if sampled(candidate, SHARE) == recorded:
            found.append(candidate)
    return found


def _tensors(rows: int, category: int | None = None) -> dict:
    """A V2 request of ``rows`` simulated transactions (every merchant code ``category`` when
    given)."""
    arrays = fraud.to_arrays([fraud.Transaction(**row) for row in transactions(rows)])
    if category is not None:
        arrays["categorical"][:] = category
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(values.shape),
                "datatype": {"float32": "FP32", "int64": "INT64"}[values.dtype.name],
                "data": values.ravel().tolist(),
            }
            for name, values in arrays.items()
        ]
    }


def _post(server: LocalServer, request_id: str, body: dict, route: str = ROUTE) -> httpx.Response:
    return httpx.post(
        server.url + route, json=body, headers={"X-Request-Id": request_id}, timeout=30
    )


def _wait_for(condition: Callable[[], object], what: str) -> object:
    """``condition()``'s first truthy value, re-checked until the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # re-check the log's state; the wait ends on the state, not the time
    raise AssertionError(f"timed out waiting for {what}")


def _acknowledged(folder: Path, ids: list[str]) -> dict[str, dict]:
    """The acknowledged records of ``ids`` once all are in the log."""

    def present() -> dict[str, dict] | None:
        records = {r["request_id"]: r for r in read_records(folder).to_pylist()}
        return {i: records[i] for i in ids} if set(ids) <= set(records) else None

    return _wait_for(present, f"records {ids} in the log")  # type: ignore[return-value]


def test_a_record_holds_the_request_the_answer_and_who_answered(
    logged: tuple[LocalServer, Path],
) -> None:
    server, folder = logged
    request_id = _recorded_ids(1)[0]
    body = {"transactions": transactions(3)}
    answer = _post(server, request_id, body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == request_id
    record = _acknowledged(folder, [request_id])[request_id]
    assert record["route"] == ROUTE and record["model"] == "fraud-scorer"
    assert record["status"] == 200 and record["latency_ms"] > 0
    assert record["version"] == answer.json()["model"]["version"]
    assert record["shadow_version"] is None
    assert record["error_field"] is None and record["error_rule"] is None
    assert json.loads(record["request"]) == body
    logged_answer, sent = json.loads(record["response"]), answer.json()
    assert [r["anomaly_score"] for r in logged_answer["results"]] == [REDACTED] * 3
    for result in sent["results"]:
        result["anomaly_score"] = REDACTED
    assert logged_answer == sent
    assert abs(record["timestamp"].timestamp() - time.time()) < 3600


def test_a_rejection_is_logged_with_its_field_and_rule(logged: tuple[LocalServer, Path]) -> None:
    server, folder = logged
    bad_named, bad_v2 = _recorded_ids(2)
    row = {**SUSPICIOUS_TRANSACTION, "amount": -5.0}
    refused = _post(server, bad_named, {"transactions": [SUSPICIOUS_TRANSACTION, row]})
    assert refused.status_code == 400, refused.text
    tensors = _tensors(1, category=99)
    refused_v2 = _post(server, bad_v2, tensors, V2_ROUTE)
    assert refused_v2.status_code == 400, refused_v2.text
    records = _acknowledged(folder, [bad_named, bad_v2])
    named = records[bad_named]
    assert named["status"] == 400
    assert named["error_field"].endswith("transactions.1.amount"), named["error_field"]
    assert named["error_rule"] == refused.json()["detail"][0]["msg"]
    assert named["version"] is None  # refused before any model ran
    v2 = records[bad_v2]
    assert v2["status"] == 400 and v2["route"] == V2_ROUTE
    assert v2["error_rule"] == refused_v2.json()["error"]
    logged_tensors = json.loads(v2["request"])["inputs"]
    assert logged_tensors[0]["data"] == tensors["inputs"][0]["data"]  # not redacted
    assert logged_tensors[1]["data"] == REDACTED


def test_v2_tensors_are_logged_with_their_version(logged: tuple[LocalServer, Path]) -> None:
    server, folder = logged
    request_id = _recorded_ids(1)[0]
    tensors = _tensors(2)
    answer = _post(server, request_id, tensors, V2_ROUTE)
    assert answer.status_code == 200, answer.text
    record = _acknowledged(folder, [request_id])[request_id]
    assert record["version"] == answer.json()["model_version"]
    assert json.loads(record["request"])["inputs"][0]["data"] == tensors["inputs"][0]["data"]
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    outputs["anomaly_score"]["data"] = REDACTED  # a named tensor in the redaction list
    logged_outputs = {o["name"]: o for o in json.loads(record["response"])["outputs"]}
    assert logged_outputs == outputs


def test_the_sampling_share_is_respected(logged: tuple[LocalServer, Path]) -> None:
    """Exactly the requests whose id hashes below the share are recorded: of 200 random ids,
    the recorded ones, and none of the others (whose answers still carry their id)."""
    server, folder = logged
    ids = [uuid.uuid4().hex for _ in range(200)]
    expected = [i for i in ids if sampled(i, SHARE)]
    assert 60 < len(expected) < 140  # the hash spreads random ids (binomial(200, 0.5))
    body = {"transactions": transactions(1)}
    for request_id in ids:
        answer = _post(server, request_id, body)
        assert answer.status_code == 200 and answer.headers["x-request-id"] == request_id
    _acknowledged(folder, expected)
    logged_ids = read_records(folder)["request_id"].to_pylist()
    assert not set(logged_ids) & (set(ids) - set(expected))

    def counted() -> float:
        return metric_value(
            server, "dlserve_payload_records_acknowledged_total", model="fraud-scorer"
        )

    # the counter is bumped just after the manifest is replaced
    _wait_for(lambda: counted() == len(logged_ids), "the acknowledged counter")


def test_replay_through_the_batch_job_reproduces_the_logged_answers(
    logged: tuple[LocalServer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, folder = logged
    ids = _recorded_ids(4)
    for position, request_id in enumerate(ids):
        answer = _post(server, request_id, {"transactions": transactions(5, seed=position)})
        assert answer.status_code == 200, answer.text
    _acknowledged(folder, ids)
    scores = tmp_path / "replayed.parquet"
    assert (
        batch_main(
            ["--model", "fraud-scorer", "--input", str(folder), "--output", str(scores), "--quiet"]
        )
        == 0
    )
    result = compare.compare(folder, scores)
    assert result.rows >= 20  # this test's 4 requests of 5 rows, and the earlier tests' rows
    assert result.logged_versions == [result.candidate_version]
    by_name = {field.name: field for field in result.fields}
    assert by_name["fraud_probability"].max_difference == 0.0
    assert by_name["fraud_probability"].psi == pytest.approx(0.0, abs=1e-12)
    assert by_name["is_fraud"].agreement == 1.0
    assert by_name["anomaly_score"].redacted
    assert compare.main(["--log", str(folder), "--scores", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "is_fraud: agreement 100.00%" in printed and "PSI 0.0000" in printed


def test_a_full_queue_drops_and_counts_without_blocking_requests(stored_models: dict) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dlserve-payload-drops-"))
    env = {**_log_env(folder, rate="fraud-scorer=1", queue="2"), PAUSED_ENV: "1"}
    with LocalServer(env=env) as server:
        server.wait("/readyz")
        body = {"transactions": transactions(2)}
        for request_id in _recorded_ids(10):
            assert _post(server, request_id, body).status_code == 200
        dropped = metric_value(
            server,
            "dlserve_payload_records_dropped_total",
            model="fraud-scorer",
            reason="queue_full",
        )
        assert dropped == 8
        assert (
            metric_value(server, "dlserve_payload_records_queued_total", model="fraud-scorer") == 2
        )
        assert read_records(folder).num_rows == 0  # the writer never ran


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_acknowledged_records_survive_a_crash_exactly_once(stored_models: dict) -> None:
    """The worker is SIGKILLed while it holds records not yet in a part: every record
    acknowledged before (in its manifest) is in the log exactly once after the restart, and
    the restarted worker logs on in a folder of its own. No client request fails."""
    folder = Path(tempfile.mkdtemp(prefix="dlserve-payload-crash-"))
    env = _log_env(folder, rate="fraud-scorer=1", part_records="4", flush_s="3600")
    with LocalServer(env=env) as server:
        server.wait("/readyz")
        body = {"transactions": transactions(2)}
        before, held = _recorded_ids(12), _recorded_ids(2)
        for request_id in before + held:
            assert _post(server, request_id, body).status_code == 200
        _acknowledged(folder, before)  # three parts of four
        ((_, manifest),) = worker_folders(folder)
        acknowledged = read_records(folder)["request_id"].to_pylist()
        assert sorted(acknowledged) == sorted(before)  # the last two wait for a fourth
        pid = manifest["identity"]["pid"]
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: _gone(pid), f"worker {pid} to end")
        server.wait("/readyz")
        after = _recorded_ids(4)
        for request_id in after:
            assert _post(server, request_id, body).status_code == 200
        _acknowledged(folder, after)
        logged = read_records(folder)["request_id"].to_pylist()
        assert sorted(logged) == sorted(before + after)  # each once; the held two were lost
        folders = worker_folders(folder)
        assert len(folders) == 2 and folders[1][1]["identity"]["pid"] != pid


def test_records_are_parquet_parts_listed_in_the_manifest(
    logged: tuple[LocalServer, Path],
) -> None:
    _, folder = logged
    for worker, manifest in worker_folders(folder):
        for entry in manifest["chunks"].values():
            part = worker / entry["file"]
            assert part.suffix == ".parquet"
            assert pq.read_metadata(part).num_rows == entry["records"]


FRAUD, IMAGE = "fraud-scorer", "image-classifier"


@dataclass(frozen=True)
class Replaying:
    """A server logging every fraud and image request, redacting nothing, with the stored
    fraud version pinned beside a candidate whose ``fraud_probability`` is inverted
    (registered, not served); ``env``: what a batch job over that store needs."""

    server: LocalServer
    folder: Path
    env: dict[str, str]
    served: str
    candidate: str


@pytest.fixture(scope="module")
def replaying(stored_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replaying]:
    root = tmp_path_factory.mktemp("replay")
    home = root / "home"
    mv.copy_store(mv.store_of(Path(os.environ["BENTOML_HOME"])), mv.store_of(home), [FRAUD, IMAGE])
    served = stored_models[FRAUD]["version"]
    candidate = mv.new_version(mv.store_of(home), FRAUD, mv.invert_output("fraud_probability"))
    folder = root / "log"
    folder.mkdir()
    env = {
        **_log_env(folder, rate=f"{FRAUD}=1,{IMAGE}=1", flush_s="0.2"),
        "DLSERVE_MODELS": "fraud,image",
        "DLSERVE_PINNED_MODELS": f"{FRAUD}:{served}",
    }
    with LocalServer(env={**env, "BENTOML_HOME": str(home)}) as running:
        yield Replaying(
            running.wait("/readyz"), folder, {"BENTOML_HOME": str(home)}, served, candidate
        )


def _batch(replay: Replaying, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m service.batch ARGS`` over the replaying server's store, as an operator runs
    it."""
    return subprocess.run(
        [sys.executable, "-m", "service.batch", *args, "--quiet"],
        env={**os.environ, **replay.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def v2_logged(replaying: Replaying) -> int:
    """JSON and binary V2 requests of the fraud scorer (binary answers to the binary ones),
    sent with Triton's client and all in the log; the rows they held."""
    client = triton.InferenceServerClient(replaying.server.url.removeprefix("http://"))
    ids, rows = [], 0
    for position, binary in enumerate((False, True, False, True, True)):
        arrays = fraud.to_arrays(
            [fraud.Transaction(**row) for row in transactions(6 + position, seed=position)]
        )
        inputs = [
            triton.InferInput(name, list(values.shape), datatype(values.dtype)).set_data_from_numpy(
                values, binary_data=binary
            )
            for name, values in arrays.items()
        ]
        outputs = [
            triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("fraud_probability", "anomaly_score")
        ]
        ids.append(uuid.uuid4().hex)
        client.infer(FRAUD, inputs, outputs=outputs, headers={"X-Request-Id": ids[-1]})
        rows += 6 + position
    client.close()
    records = _acknowledged(replaying.folder, ids)
    assert {records[i]["response_type"] for i in ids[1::2]} == {"application/octet-stream"}
    return rows


def test_a_v2_replay_with_the_version_that_answered_agrees_fully(
    replaying: Replaying, v2_logged: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = tmp_path / "same.parquet"
    job = _batch(
        replaying,
        *("--model", FRAUD, "--replay", "v2", "--version", replaying.served),
        *("--input", str(replaying.folder), "--output", str(scores)),
    )
    assert job.returncode == 0, job.stderr[-3000:]
    result = compare.compare(replaying.folder, scores)
    assert result.rows == v2_logged and result.kind == "v2"
    assert result.logged_versions == [replaying.served] == [result.candidate_version]
    assert_same_answers(result)
    assert compare.main(["--log", str(replaying.folder), "--scores", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert f"over {v2_logged} rows (v2 records)" in printed
    assert "fraud_probability: max |difference| 0, mean 0, PSI 0.0000" in printed


def test_a_v2_replay_with_another_version_shows_the_shift(
    replaying: Replaying, v2_logged: int, tmp_path: Path
) -> None:
    """The candidate answers 1 - p: the probability moves far (PSI well past 0.25), the
    anomaly score, untouched, does not (beyond float32 rounding)."""
    scores = tmp_path / "candidate.parquet"
    job = _batch(
        replaying,
        *("--model", FRAUD, "--replay", "v2", "--version", replaying.candidate),
        *("--input", str(replaying.folder), "--output", str(scores)),
    )
    assert job.returncode == 0, job.stderr[-3000:]
    result = compare.compare(replaying.folder, scores)
    assert result.rows == v2_logged
    assert result.logged_versions == [replaying.served]
    assert result.candidate_version == replaying.candidate
    by_name = {field.name: field for field in result.fields}
    assert by_name["fraud_probability"].psi > 0.25
    assert by_name["fraud_probability"].mean_difference > 0.5
    assert by_name["anomaly_score"].max_difference <= FLOAT32_ROUNDING


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_uploads_replay_with_full_agreement(replaying: Replaying, tmp_path: Path) -> None:
    """Uploads to /v1/images/classify keep their bytes in the log, the batch route its
    base64 images: replayed through the image batch job, every image gets the label it got."""
    ids = [uuid.uuid4().hex for _ in range(5)]
    for seed, request_id in enumerate(ids[:4]):
        answer = httpx.post(
            replaying.server.url + "/v1/images/classify",
            files={"image": ("upload.png", _png(seed), "image/png")},
            headers={"X-Request-Id": request_id},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    batch = {"images": [b64(_png(seed)) for seed in range(10, 13)]}
    answer = _post(replaying.server, ids[4], batch, "/v1/images/classify_batch")
    assert answer.status_code == 200, answer.text
    _acknowledged(replaying.folder, ids)
    scores = tmp_path / "images.parquet"
    job = _batch(
        replaying, "--model", IMAGE, "--input", str(replaying.folder), "--output", str(scores)
    )
    assert job.returncode == 0, job.stderr[-3000:]
    result = compare.compare(replaying.folder, scores)
    assert result.rows == 4 + 3 and result.kind == "routes"
    by_name = {field.name: field for field in result.fields}
    assert by_name["label"].agreement == 1.0
    assert by_name["class_id"].max_difference == 0.0  # a number: compared as one
