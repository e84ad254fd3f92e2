"""``python -m service.batch``: formats, rejects and exit codes, exactly-once resume after SIGKILL,
and scores equal to the HTTP service's answers for the same rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest

from core.model_store import LoadedModel, warm_up_inputs
from harness.local_server import LocalServer
from service import registry
from service.area import run_graph
from service.areas.fraud import COLUMN_RULES, Transaction
from service.batch.__main__ import main
from service.batch.adapter import find_adapter
from service.batch.http import run_upload
from service.batch.job import load_for_batch
from service.batch.parts import MANIFEST, PAUSE_ENV
from service.batch.readers import frame_to_table
from training.fraud.simulator import simulate_transactions

FIELDS = list(Transaction.model_fields)
SCORES = ["fraud_probability", "anomaly_score", "is_fraud"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """3,000 simulated transactions, all valid for the route (checked: the tests count on it)."""
    rows = simulate_transactions(3000, seed=21)
    _, reasons = COLUMN_RULES.validate(frame_to_table(rows, COLUMN_RULES.names))
    assert all(reason is None for reason in reasons)
    return rows


def _run(*args: str | Path) -> int:
    return main(["--model", "fraud", "--quiet", *map(str, args)])


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_every_format_scores_every_row_in_order(
    stored_models: dict, frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"in{suffix}"
    writers = {
        ".parquet": lambda p: frame.to_parquet(p),
        ".csv": lambda p: frame.to_csv(p, index=False),
        ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
    }
    writers[suffix](source)
    output = tmp_path / "out.parquet"
    code = _run(
        "--input",
        source,
        "--output",
        output,
        "--batch-size",
        "700",
        "--id-column",
        "transaction_id",
    )
    assert code == 0
    scores = pd.read_parquet(output)
    assert scores["transaction_id"].tolist() == frame["transaction_id"].tolist()
    assert set(scores["model_name"]) == {"fraud-scorer"}
    assert scores["fraud_probability"].between(0, 1).all()
    assert len(pd.read_parquet(tmp_path / "out.rejects.parquet")) == 0
    assert not (tmp_path / "out.parquet.parts").exists()


def test_bad_rows_go_to_the_rejects_file_with_a_reason(
    stored_models: dict, frame: pd.DataFrame, tmp_path: Path
) -> None:
    rows = frame.head(1000).copy()
    rows["amount"] = rows["amount"].astype(object)
    bad = {
        3: ("amount", -5.0),
        10: ("amount", np.nan),
        500: ("amount", "lots"),
        700: ("merchant_category", "casino"),
        999: ("hour", None),
    }
    for position, (column, value) in bad.items():
        rows.loc[position, column] = value
    source = tmp_path / "in.csv"
    rows.to_csv(source, index=False)
    output = tmp_path / "scores.csv"
    assert _run("--input", source, "--output", output, "--batch-size", "256") == 3
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv")
    assert rejects["row_id"].tolist() == sorted(bad)
    for reason, (column, _) in zip(rejects["reason"], [bad[k] for k in sorted(bad)], strict=True):
        assert reason.startswith(column)
    scores = pd.read_csv(output)
    assert sorted([*scores["row_id"], *rejects["row_id"]]) == list(range(1000))


def test_a_missing_input_or_unknown_model_exits_2(stored_models: dict, tmp_path: Path) -> None:
    assert _run("--input", tmp_path / "none.parquet", "--output", tmp_path / "o.parquet") == 2
    assert main(["--model", "nope", "--input", "x.csv", "--output", "o.parquet"]) == 2


def _job(source: Path, output: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "service.batch",
        "--model",
        "fraud",
        "--quiet",
        "--input",
        str(source),
        "--output",
        str(output),
        "--batch-size",
        "300",
        *extra,
    ]
    return subprocess.Popen(command, env={**os.environ, **(env or {})})


def _chunks_done(manifest: Path) -> int:
    try:
        return len(json.loads(manifest.read_text())["chunks"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkill_then_resume_equals_an_uninterrupted_run(
    stored_models: dict, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, row_group_size=1000)
    reference = tmp_path / "reference.parquet"
    assert _job(source, reference).wait(timeout=120) == 0

    output = tmp_path / "resumed.parquet"
    manifest = tmp_path / "resumed.parquet.parts" / MANIFEST
    killed = _job(source, output, env={PAUSE_ENV: "0.4"})
    deadline = time.monotonic() + 120
    while _chunks_done(manifest) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # inside the window between a chunk's parts and its manifest entry
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    done = _chunks_done(manifest)
    assert 3 <= done < len(frame) // 300
    assert not output.exists()

    assert _job(source, output, "--resume").wait(timeout=120) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(output), pd.read_parquet(reference))


def test_resume_refuses_another_jobs_parts(
    stored_models: dict, frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    frame.head(900).to_parquet(source)
    output = tmp_path / "out.parquet"
    killed = _job(source, output, env={PAUSE_ENV: "5"})
    manifest = tmp_path / "out.parquet.parts" / MANIFEST
    deadline = time.monotonic() + 120
    while _chunks_done(manifest) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    other_batch = ["--input", source, "--output", output, "--batch-size", "200", "--resume"]
    assert _run(*other_batch) == 2


@pytest.mark.http
def test_batch_scores_equal_the_http_answers(
    server: LocalServer, frame: pd.DataFrame, tmp_path: Path
) -> None:
    rows = frame.head(400)
    source = tmp_path / "in.parquet"
    rows.to_parquet(source)
    output = tmp_path / "out.parquet"
    assert _run("--input", source, "--output", output, "--batch-size", "128") == 0
    batch = pd.read_parquet(output)
    flags = {
        name: bool for name, field in Transaction.model_fields.items() if field.annotation is bool
    }
    # The file holds the flags as 0/1 (the job accepts that); JSON must send true/false.
    body = {"transactions": rows[FIELDS].astype(flags).to_dict(orient="records")}
    answer = httpx.post(server.url + "/v1/fraud/score", json=body, timeout=30).json()
    http = pd.DataFrame(answer["results"])
    assert answer["model"]["version"] == batch["model_version"].iloc[0]
    assert (batch["is_fraud"] == http["is_fraud"]).all()
    for column in ("fraud_probability", "anomaly_score"):
        np.testing.assert_allclose(batch[column], http[column], rtol=1e-5, atol=1e-6)


def test_dry_run_scores_one_chunk_and_writes_nothing(
    stored_models: dict, frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "in.parquet"
    frame.head(1000).to_parquet(source)
    output = tmp_path / "out.parquet"
    assert _run("--input", source, "--output", output, "--batch-size", "300", "--dry-run") == 0
    assert "first chunk of 300 rows, 300 scored" in capsys.readouterr().out
    assert not output.exists() and not (tmp_path / "out.parquet.parts").exists()


def arena_releases(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """``release_arena`` of every ``LoadedModel.run`` call from now on, in order."""
    released: list[bool] = []
    run = LoadedModel.run

    def spy(model: LoadedModel, inputs: dict, release_arena: bool = True) -> dict:
        released.append(release_arena)
        return run(model, inputs, release_arena)

    monkeypatch.setattr(LoadedModel, "run", spy)
    return released


def test_a_batch_chunk_keeps_the_cpu_arena_and_scores_as_an_online_call(
    stored_models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online calls hand ONNX Runtime's arena back after each call; a batch chunk must not (its
    activations allocated afresh every 65,536-row chunk cost the job 0.74x of its rows/s)."""
    ready = load_for_batch(find_adapter("fraud"))
    inputs = warm_up_inputs(
        ready.model.metadata["inputs"], ready.model.metadata.get("warm_up_axes")
    )
    online = ready.model.run(inputs)
    released = arena_releases(monkeypatch)
    chunk = run_graph(ready, inputs)
    assert released == [False]
    for name, values in online.items():
        np.testing.assert_array_equal(chunk[name], values)


def test_an_http_job_gives_the_arena_back_when_it_ends(
    stored_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job over HTTP runs on the service's own session: its chunks keep the arena, and the
    job's end hands it back (as an online call would), so the worker's memory does not stay
    at the job's size until the next online request."""
    monkeypatch.setenv("DLSERVE_BATCH_DIR", str(tmp_path))
    upload = tmp_path / "rows.csv"
    simulate_transactions(2500, seed=3).to_csv(upload, index=False)
    model = load_for_batch(find_adapter("fraud"))
    served = SimpleNamespace(settings=registry.settings_from_env(), ready=lambda name: model)
    released = arena_releases(monkeypatch)
    status, body = run_upload(upload, "fraud", uuid.uuid4().hex, served)
    assert status == 200 and body["scored"] == 2500
    assert released[-1] is True and False in released[:-1]
