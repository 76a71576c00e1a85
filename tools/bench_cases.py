"""The matrix `make bench` runs: its cases, their names and sizes.

Users choose the bridge by records per second per core and the latency it
adds, and both depend on three choices: one record per POST or 100, one
process or one per core, and an API that answers at once or in 20 ms. The
bench runs every combination of the three, the loop a user would write
instead (on both sinks), and the ceilings each bridge case is set against.

Each case is sized to run for about 10 to 20 seconds on two cores, from
the rates seen there; `--scale` and `--records` shrink them for a quick
try, and `--only` picks cases by name (shell-style patterns).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from kafka_bridge.usable_cpus import usable_cpus

RECORD_MODE = "record"
BATCH_MODE = "batch"
FAST_SINK = "fast"
SLOW_SINK = "slow"
ONE_PROCESS = "1"
PROCESS_PER_CPU = "auto"

RECORDS_PER_BATCH = 100
SLOW_SINK_DELAY_SECONDS = 0.020
# Workers cover the API's latency: a process needs about rate x latency
# of them. Against nginx more than a few only add GIL contention; against
# the 20 ms sink, 32 allow 1,600 records/s a process.
DEFAULT_WORKERS = {FAST_SINK: 8, SLOW_SINK: 32}

# Records of the topic the consume ceilings read: a few seconds' worth.
CONSUME_CEILING_RECORDS = 300_000
POST_CEILING_SECONDS = 6.0


@dataclass(frozen=True)
class BridgeCase:
    """One run of `kafka-bridge run` over a backlog of its own."""

    mode: str
    sink: str
    processes: str
    default_records: int

    @property
    def name(self) -> str:
        return f"{self.mode}-{self.sink}-{self.processes}"

    @property
    def process_count(self) -> int:
        if self.processes == PROCESS_PER_CPU:
            return usable_cpus()
        return int(self.processes)

    @property
    def records_per_post(self) -> int:
        return RECORDS_PER_BATCH if self.mode == BATCH_MODE else 1

    @property
    def consume_ceiling(self) -> str:
        return f"consume-{self.processes}"

    @property
    def post_ceiling(self) -> str:
        return f"post-{self.mode}-{self.sink}-{self.processes}"


@dataclass(frozen=True)
class BaselineCase:
    """The single-threaded consume-and-POST loop on one sink."""

    sink: str
    default_records: int

    @property
    def name(self) -> str:
        return f"baseline-{self.sink}"


@dataclass(frozen=True)
class PostCeilingCase:
    """Bare POST loops with the threads and processes of a bridge case."""

    name: str
    sink: str
    records_per_post: int
    processes: int


# Sized from the rates on two cores: per record some thousands of
# records/s against nginx and about 1,000 against the 20 ms sink; 100
# records per POST, some tens of thousands.
BRIDGE_CASES = (
    BridgeCase(RECORD_MODE, FAST_SINK, ONE_PROCESS, 15_000),
    BridgeCase(RECORD_MODE, FAST_SINK, PROCESS_PER_CPU, 30_000),
    BridgeCase(RECORD_MODE, SLOW_SINK, ONE_PROCESS, 15_000),
    BridgeCase(RECORD_MODE, SLOW_SINK, PROCESS_PER_CPU, 20_000),
    BridgeCase(BATCH_MODE, FAST_SINK, ONE_PROCESS, 300_000),
    BridgeCase(BATCH_MODE, FAST_SINK, PROCESS_PER_CPU, 600_000),
    BridgeCase(BATCH_MODE, SLOW_SINK, ONE_PROCESS, 300_000),
    BridgeCase(BATCH_MODE, SLOW_SINK, PROCESS_PER_CPU, 600_000),
)

# requests.post opens a connection per record: some hundreds a second
# against nginx; against the 20 ms sink about 45.
BASELINE_CASES = (
    BaselineCase(FAST_SINK, 6_000),
    BaselineCase(SLOW_SINK, 600),
)

CASE_NAMES = tuple(case.name for case in (*BRIDGE_CASES, *BASELINE_CASES))


@dataclass(frozen=True)
class Selection:
    """The cases of one run, and the ceilings their figures need."""

    bridge_cases: tuple[BridgeCase, ...]
    baseline_cases: tuple[BaselineCase, ...]

    @classmethod
    def matching(cls, patterns: Iterable[str] | None) -> Selection:
        """Cases whose names match any pattern; all of them for None."""
        chosen = list(patterns or ["*"])

        def wanted(name: str) -> bool:
            return any(fnmatch.fnmatch(name, p) for p in chosen)

        return cls(
            tuple(c for c in BRIDGE_CASES if wanted(c.name)),
            tuple(c for c in BASELINE_CASES if wanted(c.name)),
        )

    def without_processes(self) -> Selection:
        """Only the one-process bridge cases, for a bridge that cannot
        run several."""
        return Selection(
            tuple(
                case for case in self.bridge_cases
                if case.processes == ONE_PROCESS
            ),
            self.baseline_cases,
        )

    def consume_ceilings(self) -> dict[str, int]:
        """Name to process count, for each consume ceiling needed."""
        return {
            case.consume_ceiling: case.process_count
            for case in self.bridge_cases
        }

    def post_ceilings(self) -> list[PostCeilingCase]:
        found = {
            case.post_ceiling: PostCeilingCase(
                case.post_ceiling, case.sink, case.records_per_post,
                case.process_count,
            )
            for case in self.bridge_cases
        }
        return list(found.values())

    @property
    def empty(self) -> bool:
        return not self.bridge_cases and not self.baseline_cases


@dataclass(frozen=True)
class Sizes:
    """How many records each case gets, and how long a POST ceiling runs."""

    scale: float = 1.0
    records: int | None = None
    ceiling_seconds: float = POST_CEILING_SECONDS

    def of(self, default_records: int) -> int:
        if self.records is not None:
            return self.records
        return max(2, round(default_records * self.scale))

    @property
    def consume_ceiling_records(self) -> int:
        return self.of(CONSUME_CEILING_RECORDS)
