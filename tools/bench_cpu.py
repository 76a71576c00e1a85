"""Who kept the cores busy during a step of the bench.

On two shared cores every figure moves with whatever else runs, and the
bench's own helpers (the broker, the sinks, its measuring loops) take
their part as well. So for each step the machine's busy time is split by
role: the bridge (a supervisor with its children counted as one), the
sinks, the broker, the bench itself with its measuring processes, and
everything else. A process belongs to the first role whose tree holds it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tools.procfs import ProcessTable, machine_busy_seconds

# The roles, in the order a process is claimed by them; "bench" is the
# bench's own process and whatever of its children no other role holds.
BRIDGE = "bridge"
SINK = "sink"
BROKER = "broker"
BENCH = "bench"

# CPU used by other processes, in cores, above which a step's figures are
# flagged as disturbed by other work.
DISTURBED_AT_CORES = 0.2

RoleRoots = Callable[[], dict[str, list[int]]]


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the machine, and per role per PID."""

    at_seconds: float
    wall_seconds: float
    machine_seconds: float | None
    role_seconds: dict[str, dict[int, float]]

    def role_total(self, role: str) -> float:
        return sum(self.role_seconds.get(role, {}).values())


@dataclass(frozen=True)
class CpuShare:
    """Cores busy during a step: on the whole machine, per role, and by
    processes the bench did not start."""

    seconds: float
    machine_cores: float
    role_cores: dict[str, float] = field(default_factory=dict)

    @property
    def others_cores(self) -> float:
        return max(0.0, self.machine_cores - sum(self.role_cores.values()))

    @property
    def disturbed(self) -> bool:
        return self.others_cores > DISTURBED_AT_CORES

    def cores(self, role: str) -> float | None:
        return self.role_cores.get(role)

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 2),
            "machine_cores": round(self.machine_cores, 2),
            **{
                f"{role}_cores": round(cores, 2)
                for role, cores in self.role_cores.items()
            },
            "others_cores": round(self.others_cores, 2),
        }


class CpuMeter:
    """Takes samples and turns pairs of them into shares, per step."""

    def __init__(self, role_roots: RoleRoots) -> None:
        self._role_roots = role_roots
        self.steps: dict[str, CpuShare] = {}

    def sample(self) -> CpuSample:
        table = ProcessTable.read()
        claimed: set[int] = set()
        role_seconds: dict[str, dict[int, float]] = {}
        for role, roots in self._role_roots().items():
            members = set().union(*(table.tree(root) for root in roots))
            members -= claimed
            claimed |= members
            role_seconds[role] = {
                pid: table.cpu_seconds[pid] for pid in members
            }
        return CpuSample(
            time.monotonic(), time.time(), machine_busy_seconds(),
            role_seconds,
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record the share of the block under `name`, if /proc has it."""
        first = self.sample()
        yield
        share = share_between(first, self.sample())
        if share is not None:
            self.steps[name] = share


class CpuWatch:
    """The share from when it is told a measurement started to when it is
    told it ended; None until then, or without /proc."""

    def __init__(self, meter: CpuMeter) -> None:
        self._meter = meter
        self._first: CpuSample | None = None
        self.share: CpuShare | None = None

    def started(self) -> None:
        self._first = self._meter.sample()

    def ended(self) -> None:
        if self._first is not None:
            self.share = share_between(self._first, self._meter.sample())


def share_between(first: CpuSample, last: CpuSample) -> CpuShare | None:
    """Cores per role from one sample to a later one; None without /proc.

    A process that started in between counts from zero; one that ended
    in between is lost, with what it used since the first sample.
    """
    elapsed_seconds = last.at_seconds - first.at_seconds
    if (
        first.machine_seconds is None
        or last.machine_seconds is None
        or elapsed_seconds <= 0
    ):
        return None

    role_cores = {}
    for role, seconds_by_pid in last.role_seconds.items():
        before = first.role_seconds.get(role, {})
        used = sum(
            seconds - before.get(pid, 0.0)
            for pid, seconds in seconds_by_pid.items()
        )
        role_cores[role] = max(0.0, used) / elapsed_seconds
    machine_cores = (
        last.machine_seconds - first.machine_seconds
    ) / elapsed_seconds
    return CpuShare(elapsed_seconds, machine_cores, role_cores)
