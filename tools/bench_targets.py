"""What the bridge's figures should reach, and whether a run reached it.

Users pick the bridge by records per second per core and by the latency
it adds; these targets say what is good enough on the bench's two cores.
A target whose cases were not run (`--only`) is "not measured", not
missed. Some name an aim beyond the target, reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from tools.bench_results import BridgeFigures, Results

MET = "met"
MISSED = "missed"
NOT_MEASURED = "not measured"

_MEGABYTE_IN_MIB = 1_000_000 / 2**20


@dataclass(frozen=True)
class Target:
    """One target: its figure, its bound, and which way is better."""

    description: str
    unit: str
    measured: float | None
    bound: float
    aim: float | None = None
    at_most: bool = False
    note: str = ""

    @property
    def status(self) -> str:
        return self._against(self.bound)

    @property
    def aim_status(self) -> str | None:
        return None if self.aim is None else self._against(self.aim)

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "status": self.status,
            "aim_status": self.aim_status,
        }

    def _against(self, bound: float) -> str:
        if self.measured is None:
            return NOT_MEASURED
        reached = (
            self.measured <= bound if self.at_most else self.measured >= bound
        )
        return MET if reached else MISSED


def evaluate(
    results: Results, *, latency_judged: bool = True
) -> list[Target]:
    """Each target against the run's figures; the latency target only
    when `latency_judged` (the latency records went at half the rate)."""
    return [
        Target(
            "per record, fast sink, --processes auto",
            "records/s",
            _rate(results, "record-fast-auto"),
            bound=2_000,
            aim=4_000,
        ),
        Target(
            "per record, 20 ms sink, --processes auto, over the "
            "single-thread baseline on that sink",
            "x",
            _speed_up(results),
            bound=15,
        ),
        Target(
            "100 records per POST, fast sink, --processes auto",
            "records/s",
            _rate(results, "batch-fast-auto"),
            bound=60_000,
            aim=90_000,
        ),
        Target(
            "bridge / lower ceiling, lowest of the cases",
            "",
            _extreme(results, lambda c: c.ratio_to_lower_ceiling, min),
            bound=0.8,
        ),
        Target(
            "added latency p99 at half the maximum rate, highest of the "
            "cases",
            "ms",
            (
                _extreme(results, lambda c: c.added_latency_p99_ms, max)
                if latency_judged
                else None
            ),
            bound=5.0,
            at_most=True,
        ),
        Target(
            "peak RSS per process at default settings (record mode), "
            "largest",
            "MiB",
            _largest_process(results),
            bound=round(150 * _MEGABYTE_IN_MIB, 1),
            at_most=True,
            note="150 MB",
        ),
    ]


def _rate(results: Results, case_name: str) -> float | None:
    case = results.bridge_case(case_name)
    return None if case is None else case.records_per_second


def _speed_up(results: Results) -> float | None:
    bridge = _rate(results, "record-slow-auto")
    baseline = results.baseline("baseline-slow")
    if bridge is None or baseline is None:
        return None
    return round(bridge / baseline.records_per_second, 1)


def _extreme(
    results: Results,
    figure: Callable[[BridgeFigures], float | None],
    pick: Callable[[list[float]], float],
) -> float | None:
    values = [
        value for case in results.bridge_cases
        if (value := figure(case)) is not None
    ]
    return pick(values) if values else None


def _largest_process(results: Results) -> float | None:
    peaks = [
        peak
        for case in results.bridge_cases
        if case.mode == "record"
        for peak in (case.peak_rss_mib, case.supervisor_peak_rss_mib)
        if peak is not None
    ]
    return max(peaks, default=None)
