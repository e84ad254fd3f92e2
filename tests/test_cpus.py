"""Available CPUs: the affinity mask, capped by a cgroup v2 or v1 CPU quota (rounded up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import available_cpus, quota_cpus


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota_us: int, period_us: int = 100000) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


def test_quota_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).mkdir()
    assert quota_cpus(cgroup_v2(tmp_path / "a", "150000 100000")) == 1.5
    assert quota_cpus(cgroup_v2(tmp_path / "b", "max 100000")) is None
    assert quota_cpus(cgroup_v1(tmp_path / "c", 300000)) == 3.0
    assert quota_cpus(cgroup_v1(tmp_path / "d", -1)) is None  # v1: no quota
    assert quota_cpus(tmp_path / "none") is None


def test_available_cpus_is_capped_by_the_quota_rounded_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3, 4, 5, 6, 7})
    for name in ("v2", "v1", "loose", "none"):
        (tmp_path / name).mkdir()
    assert available_cpus(cgroup_v2(tmp_path / "v2", "150000 100000")) == 2
    assert available_cpus(cgroup_v1(tmp_path / "v1", 50000)) == 1
    assert available_cpus(cgroup_v2(tmp_path / "loose", "1600000 100000")) == 8  # affinity wins
    assert available_cpus(tmp_path / "none") == 8
