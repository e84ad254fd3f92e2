"""``--engine ray`` gives the local engine's output, run inside a private network namespace
(``unshare -n`` with only loopback up) so nothing Ray binds can be reached from outside."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from service.batch.__main__ import main
from tests.needs import require
from training.fraud.simulator import simulate_transactions

pytest.importorskip("ray.data")


def _private_network_works() -> bool:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


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
    command = shlex.join(
        [
            sys.executable,
            "-m",
            "service.batch",
            "--model",
            "fraud",
            "--engine",
            "ray",
            "--ray-actors",
            "1",
            "--input",
            str(source),
            "--output",
            str(ray_out),
            "--batch-size",
            "512",
            "--quiet",
        ]
    )
    job = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && {command}"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert job.returncode in (0, 3), job.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(ray_out), pd.read_parquet(local))
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "ray.rejects.parquet"),
        pd.read_parquet(tmp_path / "local.rejects.parquet"),
    )
