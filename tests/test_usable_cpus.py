"""`--processes auto`: the CPU affinity, capped by a cgroup CPU quota.

Each test lays out the files a kernel shows under /sys/fs/cgroup and in
/proc/self/cgroup, in a temporary directory, and reads them as the
bridge would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kafka_bridge.usable_cpus import cpu_quota, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2_host(tmp_path: Path, cgroup: str, limits: dict[str, str]) -> Path:
    """A cgroup v2 hierarchy, the process in `cgroup`, with `cpu.max` of
    each directory given (relative to the root); returns /proc's file."""
    for directory, cpu_max in limits.items():
        _write(tmp_path / "fs" / directory / "cpu.max", cpu_max + "\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, f"0::{cgroup}\n")
    return proc


def test_a_v2_quota_of_one_and_a_half_cpus_is_read_as_such(
    tmp_path: Path,
) -> None:
    proc = _v2_host(tmp_path, "/", {".": "150000 100000"})

    assert cpu_quota(tmp_path / "fs", proc) == 1.5


def test_part_of_a_cpu_counts_as_one_process(tmp_path: Path) -> None:
    proc = _v2_host(tmp_path, "/", {".": "50000 100000"})

    assert usable_cpus(tmp_path / "fs", proc) == 1


def test_a_quota_above_the_affinity_leaves_the_affinity(
    tmp_path: Path,
) -> None:
    quota_us = (AFFINITY + 8) * 100000
    proc = _v2_host(tmp_path, "/", {".": f"{quota_us} 100000"})

    assert usable_cpus(tmp_path / "fs", proc) == AFFINITY


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    proc = _v2_host(tmp_path, "/", {".": "max 100000"})

    assert cpu_quota(tmp_path / "fs", proc) is None
    assert usable_cpus(tmp_path / "fs", proc) == AFFINITY


def test_the_lowest_quota_along_the_cgroup_path_applies(
    tmp_path: Path,
) -> None:
    proc = _v2_host(
        tmp_path,
        "/kubepods/pod-1/bridge",
        {
            "kubepods": "max 100000",
            "kubepods/pod-1": "100000 100000",
            "kubepods/pod-1/bridge": "300000 100000",
        },
    )

    assert cpu_quota(tmp_path / "fs", proc) == 1.0


def test_a_v1_cfs_quota_of_the_cpu_controller_is_read(
    tmp_path: Path,
) -> None:
    controller = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    _write(controller / "cpu.cfs_quota_us", "200000\n")
    _write(controller / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")

    assert cpu_quota(tmp_path / "fs", proc) == 2.0


def test_a_v1_quota_of_minus_one_is_no_limit(tmp_path: Path) -> None:
    controller = tmp_path / "fs" / "cpu"
    _write(controller / "cpu.cfs_quota_us", "-1\n")
    _write(controller / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "1:cpu:/\n")

    assert cpu_quota(tmp_path / "fs", proc) is None


@pytest.mark.parametrize(
    "proc_text", ["", "not a cgroup line\n", "0::/gone/away\n"]
)
def test_what_cannot_be_read_leaves_the_affinity(
    tmp_path: Path, proc_text: str
) -> None:
    proc = tmp_path / "proc-cgroup"
    _write(proc, proc_text)

    assert usable_cpus(tmp_path / "fs", proc) == AFFINITY


def test_without_proc_cgroup_the_affinity_is_used(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path / "fs", tmp_path / "missing") == AFFINITY
