"""The seam, proved from outside: two areas declared only in the test suite (``toy_sum_area``,
batched; ``toy_counter_area``, stepwise), each a graph the test exports itself, are served by an
unedited ``service/`` through ``DLSERVE_AREA_MODULES``: routes with 400s, ``/v1/models``,
metrics, readiness, batch jobs, and a stream that advances every request together and frees a
request's place when its client leaves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import pandas as pd
import pytest

from harness.http_checks import assert_names_field_and_rule, metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.batch.__main__ import main as batch_main
from tests.toy_counter_area import MODEL as COUNTER
from tests.toy_models import PLUGINS
from tests.toy_sum_area import MODEL as SUM

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def toy_server(toy_models: None) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_AREA_MODULES": PLUGINS,
        "DLSERVE_MODELS": "toy-sum,toy-counter",
        "DLSERVE_MAX_ACTIVE_SEQUENCES": "2",
        "DLSERVE_MAX_WAITING_SEQUENCES": "1",
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def _events(response: httpx.Response) -> Iterator[dict | str]:
    """The payloads of a server-sent event stream, ``"[DONE]"`` last."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


def _counts(server: LocalServer) -> tuple[float, float]:
    """``(running, waiting)`` requests of the counter, from ``/metrics``."""
    return (
        metric_value(server, "dlserve_num_requests_running", model=COUNTER),
        metric_value(server, "dlserve_num_requests_waiting", model=COUNTER),
    )


def _wait_for_counts(server: LocalServer, wanted: tuple[int, int], seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while _counts(server) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _counts(server) == wanted


def test_the_batched_toy_answers_and_is_counted(toy_server: LocalServer) -> None:
    before = metric_value(toy_server, "dlserve_predictions_total", model=SUM, outcome="ok")
    rows = [{"a": 1, "b": 2, "c": 3.5}, {"a": -1000, "b": 0, "c": 1000}]
    response = httpx.post(toy_server.url + "/v1/toy/sum", json={"rows": rows}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["sums"] == [6.5, 0.0]
    assert response.json()["model"]["name"] == SUM
    after = metric_value(toy_server, "dlserve_predictions_total", model=SUM, outcome="ok")
    assert after == before + 1
    assert "dlserve_score_bucket{" not in httpx.get(toy_server.url + "/metrics").text


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"rows": [{"a": 1, "b": 2, "c": 1001}]}, ["rows", 0, "c"], "less than or equal to 1000"),
        ({"rows": []}, ["rows"], "at least 1 item"),
        ({"rows": [{"a": 1, "b": 2}]}, ["rows", 0, "c"], "Field required"),
        ({"rows": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, ["rows", 0, "d"], "Extra inputs"),
    ],
)
def test_the_batched_toy_refuses_bad_rows(
    toy_server: LocalServer, body: dict, loc: list, message: str
) -> None:
    response = httpx.post(toy_server.url + "/v1/toy/sum", json=body, timeout=10)
    assert_names_field_and_rule(response, loc, message)


@pytest.fixture(scope="module")
def held_batch_server(toy_models: None) -> Iterator[LocalServer]:
    """The batched toy with a ten-minute batch window that only a full batch (101 rows) ends."""
    env = {
        "DLSERVE_AREA_MODULES": PLUGINS,
        "DLSERVE_MODELS": "toy-sum",
        "DLSERVE_MAX_WAIT_MS": "600000",
        "DLSERVE_MAX_BATCH_ROWS": "101",
        "DLSERVE_MAX_QUEUE_ROWS": "150",
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def held_and_refused(
    server: LocalServer, *senders: Callable[[], httpx.Response]
) -> tuple[httpx.Response, httpx.Response]:
    """Send two 100-row requests at once: the open batch holds whichever queues first and the
    other is refused at once (200 rows > 150); one more row then fills the batch (101), which
    goes and answers the held one. Returns ``(answered, refused)``; no timing window."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(send) for send in senders]
        done, _ = wait(futures, timeout=60, return_when=FIRST_COMPLETED)
        assert done, "neither request was refused"
        (refused,) = done
        filler = httpx.post(server.url + "/v1/toy/sum", json={"rows": [ONE_ROW]}, timeout=60)
        assert filler.status_code == 200 and filler.json()["sums"] == [3.0]
        (answered,) = [future for future in futures if future is not refused]
        return answered.result(timeout=60), refused.result()


ONE_ROW = {"a": 1, "b": 1, "c": 1}


def test_rows_beyond_the_queue_bound_get_503_with_retry_after(
    held_batch_server: LocalServer,
) -> None:
    def send() -> httpx.Response:
        body = {"rows": [ONE_ROW] * 100}
        return httpx.post(held_batch_server.url + "/v1/toy/sum", json=body, timeout=60)

    answered, refused = held_and_refused(held_batch_server, send, send)
    assert answered.status_code == 200 and answered.json()["sums"] == [3.0] * 100
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "100 rows already waiting (limit 150)" in refused.json()["error"]


def test_v2_requests_queue_in_the_named_routes_batcher(held_batch_server: LocalServer) -> None:
    """100 named rows and 100 rows over /v2 share one batcher: one waits, the other is refused
    (two batchers would have taken both)."""
    x = {"name": "x", "datatype": "FP32", "shape": [100, 3], "data": [1] * 300}

    def named() -> httpx.Response:
        body = {"rows": [ONE_ROW] * 100}
        return httpx.post(held_batch_server.url + "/v1/toy/sum", json=body, timeout=60)

    def v2() -> httpx.Response:
        url = held_batch_server.url + f"/v2/models/{SUM}/infer"
        return httpx.post(url, json={"inputs": [x]}, timeout=60)

    answered, refused = held_and_refused(held_batch_server, named, v2)
    assert answered.status_code == 200, answered.text
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "100 rows already waiting (limit 150)"


def test_models_and_readiness_list_only_the_toys(toy_server: LocalServer) -> None:
    assert httpx.get(toy_server.url + "/readyz").status_code == 200
    models = {m["name"]: m for m in httpx.get(toy_server.url + "/v1/models").json()["models"]}
    assert set(models) == {SUM, COUNTER}
    assert models[SUM]["kind"] == "batched" and models[COUNTER]["kind"] == "stepwise"
    assert models[SUM]["status"] == "ready" and models[SUM]["provider"] == "cpu"
    assert {r["route"] for r in models[SUM]["routes"]} == {"/v1/toy/sum", "/v1/batch/jobs/submit"}
    assert models[COUNTER]["request_schema"]["properties"]["steps"]["maximum"] == 10_000
    body = {"transactions": transactions(1)}
    fraud = httpx.post(toy_server.url + "/v1/fraud/score", json=body, timeout=10)
    assert fraud.status_code == 404 and "DLSERVE_MODELS" in fraud.json()["error"]


def test_the_batched_toy_is_a_tensor_model_on_v2_by_declaration(toy_server: LocalServer) -> None:
    url = toy_server.url + "/v2/models/toy-sum"
    assert httpx.get(url).json()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    x = {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3.5, -1, 0, 1]}
    answer = httpx.post(url + "/infer", json={"inputs": [x]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == [
        {"name": "total", "datatype": "FP32", "shape": [2], "data": [6.5, 0.0]}
    ]
    too_many = {**x, "shape": [101, 3], "data": [0] * 303}
    refused = httpx.post(url + "/infer", json={"inputs": [too_many]}, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "x: 101 rows; at most 100 per request"
    stepwise = httpx.get(toy_server.url + f"/v2/models/{COUNTER}/ready")
    assert stepwise.status_code == 404


def test_a_batch_job_scores_the_toy(
    toy_models: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLSERVE_AREA_MODULES", PLUGINS)
    source, output = tmp_path / "rows.csv", tmp_path / "sums.parquet"
    pd.DataFrame({"a": [1, 2, 5000], "b": [1, 2, 0], "c": [1, 2, 0]}).to_csv(source, index=False)
    assert batch_main(["--model", "toy-sum", "--input", str(source), "--output", str(output)]) == 3
    assert pd.read_parquet(output)["total"].tolist() == [3.0, 6.0]
    rejects = pd.read_parquet(tmp_path / "sums.rejects.parquet")
    assert rejects["row_id"].tolist() == [2] and rejects["reason"][0].startswith("a:")


def test_a_stream_yields_every_step_then_done(toy_server: LocalServer) -> None:
    body = {"start": 5, "steps": 4}
    with httpx.stream("POST", toy_server.url + "/v1/toy/count", json=body, timeout=10) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = list(_events(answer))
    assert [event["value"] for event in events[:-1]] == [6, 7, 8, 9]
    assert events[-1] == "[DONE]"


def test_bad_stream_input_is_a_400_before_any_event(toy_server: LocalServer) -> None:
    response = httpx.post(toy_server.url + "/v1/toy/count", json={"start": 1, "steps": 0})
    assert_names_field_and_rule(response, ["steps"], "greater than or equal to 1")


def test_running_streams_advance_together_in_one_call(toy_server: LocalServer) -> None:
    def batch_sizes(start: int) -> list[int]:
        body = {"start": start, "steps": 50, "delay_ms": 20}
        with httpx.stream("POST", toy_server.url + "/v1/toy/count", json=body, timeout=20) as r:
            assert r.status_code == 200, r.read()
            events = list(_events(r))
        assert events and events[-1] == "[DONE]", f"the stream ended early: {events[-3:]}"
        values = [event["value"] for event in events[:-1]]
        assert values == list(range(start + 1, start + 51)), values
        return [event["batch"] for event in events[:-1]]

    # The earlier tests' streams leave their places at the next step: both must find room.
    # The second starts once the first is running: with one waiting place
    # (DLSERVE_MAX_WAITING_SEQUENCES), two that arrive together may both wait, and one is
    # refused (429), as it should be. The first runs 50 steps of 20 ms, so they overlap.
    _wait_for_counts(toy_server, (0, 0))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batch_sizes, 0)
        _wait_for_counts(toy_server, (1, 0))
        sizes = [pool.submit(batch_sizes, 100).result(), first.result()]
    assert max(max(steps) for steps in sizes) == 2  # both advanced in the same call


def test_a_client_that_leaves_frees_its_place_at_once(toy_server: LocalServer) -> None:
    body = {"start": 0, "steps": 10_000, "delay_ms": 20}  # 200 s if nobody stopped it
    with httpx.stream("POST", toy_server.url + "/v1/toy/count", json=body, timeout=10) as answer:
        events = _events(answer)
        assert next(events)["value"] == 1 and next(events)["value"] == 2
        assert _counts(toy_server) == (1, 0)
    _wait_for_counts(toy_server, (0, 0))


def test_beyond_the_running_and_waiting_bounds_a_stream_gets_429(toy_server: LocalServer) -> None:
    body = {"start": 0, "steps": 200, "delay_ms": 20}
    client = httpx.Client(timeout=10)
    held = []
    try:
        # Two run (DLSERVE_MAX_ACTIVE_SEQUENCES), one waits (DLSERVE_MAX_WAITING_SEQUENCES).
        for expected in [(1, 0), (2, 0), (2, 1)]:
            held.append(client.stream("POST", toy_server.url + "/v1/toy/count", json=body))
            assert held[-1].__enter__().status_code == 200
            _wait_for_counts(toy_server, expected)
        refused = httpx.post(toy_server.url + "/v1/toy/count", json=body, timeout=10)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "waiting" in refused.json()["error"]
        # refused at the gate, before the body is parsed: an invalid body gets the same 429
        unparsed = httpx.post(toy_server.url + "/v1/toy/count", json={"steps": 0}, timeout=10)
        assert unparsed.status_code == 429
    finally:
        for response in held:
            response.__exit__(None, None, None)
        client.close()
    _wait_for_counts(toy_server, (0, 0))
    after = httpx.post(toy_server.url + "/v1/toy/count", json={"start": 0, "steps": 1}, timeout=10)
    assert after.status_code == 200, "the queue freed but the gate still refuses"
