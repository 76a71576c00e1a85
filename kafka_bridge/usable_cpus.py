"""How many CPUs this process may use, for `--processes auto`.

A bridge process uses at most one core (the interpreter lock), so `auto`
starts one per CPU it may use. The CPU affinity alone overcounts in a
container: one limited to 2 CPUs by a CFS quota on a 32-core node still
sees 32 CPUs, and 32 processes would share 2 CPUs' worth of time, each
with its own consumer, queue and memory. The quota caps the count: that
of cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` over
`cpu.cfs_period_us`), the lowest along the process's cgroup path, rounded
up, since part of a CPU still runs a process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(
    cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP
) -> int:
    """The CPUs in this process's affinity, capped by a CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is None:
        return cpus
    return max(1, min(cpus, math.ceil(quota)))


def cpu_quota(
    cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP
) -> float | None:
    """The CPU quota in CPUs (1.5: one and a half), or None if unlimited
    or unknown."""
    quotas = [
        quota
        for directory in _cgroup_directories(cgroup_root, proc_cgroup)
        if (quota := _quota_in(directory)) is not None
    ]
    return min(quotas, default=None)


def _cgroup_directories(
    cgroup_root: Path, proc_cgroup: Path
) -> list[Path]:
    """The directories whose CPU limits apply to this process, from its
    own cgroup up to the root, under v2 and under v1's cpu controller."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []

    directories = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            mount = cgroup_root
        elif "cpu" in controllers.split(","):
            mount = cgroup_root / controllers
        else:
            continue
        directories += _up_to_root(mount, path)
    return directories


def _up_to_root(mount: Path, path: str) -> list[Path]:
    """The cgroup at `path` under `mount`, and each parent up to it."""
    parts = [part for part in path.split("/") if part]
    return [
        mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)
    ]


def _quota_in(directory: Path) -> float | None:
    v2 = _read_words(directory / "cpu.max")
    if v2 is not None:
        return _ratio(*v2) if len(v2) == 2 else None

    quota = _read_words(directory / "cpu.cfs_quota_us")
    period = _read_words(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota[0], period[0])


def _ratio(quota: str, period: str) -> float | None:
    """quota / period in CPUs; None for "max" (v2) or -1 (v1): no limit."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def _read_words(path: Path) -> list[str] | None:
    try:
        return path.read_text().split()
    except OSError:
        return None
