"""What the bench tools read about processes from /proc.

A figure of CPU or memory means something only when it is known whose it
is: the bridge's, the sink's, the broker's, or another program's on the
same two cores. The bridge may also be a supervisor with child processes,
and nginx a master with workers, so a process is counted with its tree.
Linux only: elsewhere every reading is None or empty, and the bench prints
no CPU or memory figures.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessTable:
    """Every process's parent and CPU time, read in one pass."""

    parents: dict[int, int]
    cpu_seconds: dict[int, float]

    @classmethod
    def read(cls) -> ProcessTable:
        parents: dict[int, int] = {}
        cpu_seconds: dict[int, float] = {}
        for stat_path in _PROC.glob("[0-9]*/stat"):
            fields = _stat_fields(stat_path)
            if fields is None:
                continue
            pid = int(stat_path.parent.name)
            parents[pid] = int(fields[1])
            cpu_seconds[pid] = _cpu_seconds_of(fields)
        return cls(parents, cpu_seconds)

    def tree(self, root: int) -> set[int]:
        """The root, if it runs, and all of its descendants."""
        if root not in self.parents:
            return set()
        members = {root}
        grew = True
        while grew:
            found = {
                pid for pid, parent in self.parents.items()
                if parent in members and pid not in members
            }
            members |= found
            grew = bool(found)
        return members


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is pid."""
    table = ProcessTable.read()
    return [child for child, parent in table.parents.items() if parent == pid]


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU the process has used, or None if it is gone."""
    fields = _stat_fields(_PROC / str(pid) / "stat")
    return None if fields is None else _cpu_seconds_of(fields)


def peak_rss_mib(pid: int) -> float | None:
    """The process's high-water resident set (VmHWM), or None."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent running anything since boot."""
    try:
        first_line = (_PROC / "stat").read_text().splitlines()[0]
    except OSError:
        return None
    # user nice system idle iowait irq softirq ...: idle and iowait are
    # not work, and steal is the hypervisor's, not this machine's.
    user, nice, system, _, _, irq, softirq = map(
        int, first_line.split()[1:8]
    )
    busy_ticks = user + nice + system + irq + softirq
    return busy_ticks / os.sysconf("SC_CLK_TCK")


def _stat_fields(stat_path: Path) -> list[str] | None:
    """The fields after the command name, which may hold spaces and so
    sits in brackets: state, parent, ... (field 3 onwards of proc(5))."""
    with contextlib.suppress(OSError):
        return stat_path.read_text().rpartition(")")[2].split()
    return None


def _cpu_seconds_of(fields: list[str]) -> float:
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")
