"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

``os.cpu_count()`` counts the host's CPUs; a container limited to 2 CPUs on a 64-core host
(``cpu.max`` = ``200000 100000``) or pinned by ``taskset`` must not start 64 workers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``); ``None`` when there is no quota or no cgroup file to read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on (affinity), capped by the quota rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
