"""``--engine ray`` gives the local engine's output, over a Parquet file and over a payload
log folder, run inside a private network namespace (``unshare -n`` with only loopback up) so
nothing Ray binds can be reached from outside."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.batch.__main__ import main
from tests.needs import require
from tests.payload_records import fraud_arrays, log_writer, v2_record
from training.fraud.simulator import simulate_transactions

pytest.importorskip("ray.data")


def _private_network_works() -> bool:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def _ray_job(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m service.batch --engine ray ARGS`` (one actor, chunks of 512) inside a
    private network namespace."""
    command = shlex.join(
        [
            *(sys.executable, "-m", "service.batch", "--engine", "ray", "--ray-actors", "1"),
            *(*args, "--batch-size", "512", "--quiet"),
        ]
    )
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && {command}"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ray_engine_matches_the_local_engine(stored_models: dict, tmp_path: Path) -> None:
    require(_private_network_works(), "unshare -n is not permitted here (Ray runs only inside it)")
    source = tmp_path / "in.parquet"
    simulate_transactions(5000, seed=4).to_parquet(source, row_group_size=1500)
    local = tmp_path / "local.parquet"
    assert main(
        [
            "--model",
            "fraud",
            "--input",
            str(source),
            "--output",
            str(local),
            "--batch-size",
            "512",
            "--quiet",
        ]
    ) in (0, 3)
    ray_out = tmp_path / "ray.parquet"
    job = _ray_job("--model", "fraud", "--input", str(source), "--output", str(ray_out))
    assert job.returncode in (0, 3), job.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(ray_out), pd.read_parquet(local))
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "ray.rejects.parquet"),
        pd.read_parquet(tmp_path / "local.rejects.parquet"),
    )


def test_ray_engine_replays_a_payload_log_as_the_local_engine(
    stored_models: dict, tmp_path: Path
) -> None:
    """A log folder of V2 records (JSON and binary, one row refused by the version) scored
    with --replay v2: the same scores and rejects as the local engine, keyed payload_row."""
    require(_private_network_works(), "unshare -n is not permitted here (Ray runs only inside it)")
    writer = log_writer(tmp_path / "log")
    for position in range(6):
        arrays = fraud_arrays(300, seed=position)
        if position == 5:
            arrays["categorical"][7] = 99  # refused: an unknown merchant code
        outputs = {"fraud_probability": np.zeros((300, 1), np.float32)}
        writer.offer(v2_record(f"r{position}", arrays, outputs, binary=position % 2 == 1))
    writer.close()
    job = ("--model", "fraud-scorer", "--replay", "v2", "--input", str(tmp_path / "log"))
    local = tmp_path / "local.parquet"
    assert main([*job, "--output", str(local), "--batch-size", "512", "--quiet"]) == 3
    ray_out = tmp_path / "ray.parquet"
    ran = _ray_job(*job, "--output", str(ray_out))
    assert ran.returncode == 3, ran.stderr[-3000:]
    scores = pd.read_parquet(ray_out)
    assert len(scores) == 6 * 300 - 1 and scores["payload_row"].iloc[0] == "r0/0"
    pd.testing.assert_frame_equal(scores, pd.read_parquet(local))
    rejects = pd.read_parquet(tmp_path / "ray.rejects.parquet")
    assert rejects["payload_row"].tolist() == ["r5/7"]
    pd.testing.assert_frame_equal(rejects, pd.read_parquet(tmp_path / "local.rejects.parquet"))
    assert not (tmp_path / "ray.parquet.parts").exists()  # the rows file went with the parts
