"""The figures of one `make bench` run, as printed and as written to
bench-results.json.

Each bridge case is set against the two ceilings that apply to it (the
consume loops with its process count, the POST loops with its delivery
mode, sink, threads and processes) and reported as a fraction of the
lower; its latency is reported as what the bridge added, the sink's own
delay taken off. Every figure is flat and rounded, so that the JSON reads
as easily as the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.bench_baseline import BaselineRun
from tools.bench_bridge import BridgeRun
from tools.bench_cases import BridgeCase
from tools.bench_ceilings import Ceiling
from tools.bench_cpu import BENCH, BRIDGE, BROKER, SINK, CpuShare


@dataclass(frozen=True)
class CpuFigures:
    """Cores busy during a step, by role; None where /proc was missing."""

    bridge_cores: float | None = None
    sink_cores: float | None = None
    broker_cores: float | None = None
    bench_cores: float | None = None
    others_cores: float | None = None

    @classmethod
    def of(cls, share: CpuShare | None) -> CpuFigures:
        if share is None:
            return cls()

        def cores(role: str) -> float | None:
            return _rounded(share.cores(role), 2)

        return cls(
            bridge_cores=cores(BRIDGE),
            sink_cores=cores(SINK),
            broker_cores=cores(BROKER),
            bench_cores=cores(BENCH),
            others_cores=round(share.others_cores, 2),
        )


@dataclass(frozen=True)
class CeilingFigures:
    """A bare loop's rate; its CPU is the bench's measuring processes'."""

    name: str
    processes: int
    threads: int
    records_per_second: float
    requests_per_second: float | None
    cpu_ms_per_record: float
    cpu: CpuFigures

    @classmethod
    def of(cls, ceiling: Ceiling, share: CpuShare | None) -> CeilingFigures:
        return cls(
            name=ceiling.name,
            processes=ceiling.processes,
            threads=ceiling.threads,
            records_per_second=round(ceiling.records_per_second, 1),
            requests_per_second=_rounded(ceiling.requests_per_second, 1),
            cpu_ms_per_record=round(ceiling.cpu_ms_per_record, 4),
            cpu=CpuFigures.of(share),
        )


@dataclass(frozen=True)
class BaselineFigures:
    """The loop a user would write, on one sink."""

    name: str
    records: int
    records_per_second: float
    cpu_ms_per_record: float
    cpu: CpuFigures

    @classmethod
    def of(cls, run: BaselineRun, share: CpuShare | None) -> BaselineFigures:
        return cls(
            name=run.name,
            records=run.records,
            records_per_second=round(run.records_per_second, 1),
            cpu_ms_per_record=round(run.cpu_ms_per_record, 3),
            cpu=CpuFigures.of(share),
        )


@dataclass(frozen=True)
class BridgeFigures:
    """One bridge case against its ceilings."""

    name: str
    mode: str
    sink: str
    processes: str
    process_count: int
    records: int
    records_per_post: int
    records_per_second: float
    rate_after_all_joined: bool
    wall_records_per_second: float
    posts: int
    consume_ceiling: float | None
    post_ceiling: float | None
    lower_ceiling: str | None
    lower_ceiling_records_per_second: float | None
    ratio_to_lower_ceiling: float | None
    latency_samples: int
    latency_rate_per_second: float
    added_latency_p50_ms: float | None
    added_latency_p99_ms: float | None
    peak_rss_mib: float | None
    supervisor_peak_rss_mib: float | None
    processes_seen: int
    cpu: CpuFigures
    cpu_ms_per_record: float | None
    missing: int | None
    duplicates: int
    exit_code: int | None
    stop_seconds: float

    @classmethod
    def of(
        cls,
        case: BridgeCase,
        records: int,
        run: BridgeRun,
        ceilings: dict[str, CeilingFigures],
    ) -> BridgeFigures:
        rate = run.drain.records_per_second
        consume = ceilings.get(case.consume_ceiling)
        post = ceilings.get(case.post_ceiling)
        lower = min(
            (c for c in (consume, post) if c is not None),
            key=lambda c: c.records_per_second,
            default=None,
        )
        lower_rate = None if lower is None else lower.records_per_second
        return cls(
            name=case.name,
            mode=case.mode,
            sink=case.sink,
            processes=case.processes,
            process_count=case.process_count,
            records=records,
            records_per_post=case.records_per_post,
            records_per_second=round(rate, 1),
            rate_after_all_joined=run.drain.all_joined,
            wall_records_per_second=round(run.wall_records_per_second, 1),
            posts=run.drain.posts,
            consume_ceiling=_rate_of(consume),
            post_ceiling=_rate_of(post),
            lower_ceiling=None if lower is None else lower.name,
            lower_ceiling_records_per_second=lower_rate,
            ratio_to_lower_ceiling=(
                None if lower_rate is None else round(rate / lower_rate, 3)
            ),
            latency_samples=len(run.latencies_ms),
            latency_rate_per_second=round(run.latency_rate_per_second, 1),
            added_latency_p50_ms=percentile(run.latencies_ms, 0.50),
            added_latency_p99_ms=percentile(run.latencies_ms, 0.99),
            peak_rss_mib=_rounded(run.memory.largest_process_mib, 1),
            supervisor_peak_rss_mib=_rounded(run.memory.supervisor_mib, 1),
            processes_seen=run.memory.processes,
            cpu=CpuFigures.of(run.cpu),
            cpu_ms_per_record=_rounded(run.cpu_ms_per_record, 3),
            missing=run.drain.missing,
            duplicates=run.duplicates,
            exit_code=run.exit_code,
            stop_seconds=round(run.stop_seconds, 2),
        )

    @property
    def ok(self) -> bool:
        """Nothing known to be lost, and the bridge stopped cleanly."""
        return not self.missing and self.exit_code == 0


@dataclass(frozen=True)
class Results:
    """The figures of one run."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    finished_at: str
    bridge_cases: list[BridgeFigures]
    baselines: list[BaselineFigures]
    ceilings: list[CeilingFigures]
    not_run: dict[str, str] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(case.ok for case in self.bridge_cases)

    def bridge_case(self, name: str) -> BridgeFigures | None:
        return next((c for c in self.bridge_cases if c.name == name), None)

    def baseline(self, name: str) -> BaselineFigures | None:
        return next((b for b in self.baselines if b.name == name), None)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of values sorted in ascending order."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return round(sorted_values[index], 1)


def _rate_of(ceiling: CeilingFigures | None) -> float | None:
    return None if ceiling is None else ceiling.records_per_second


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
