"""How the bench reads a case's rate and latency from a sink's log."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest

from tools.bench_arrivals import (
    CaseArrivals,
    added_latencies_ms,
    drain_of_batches,
    drain_of_records,
)
from tools.bench_records import Produced


def _produced(
    topic: str, offsets: list[int], timestamps_ms: list[int]
) -> Produced:
    """Records all in partition 0, at the given offsets and times."""
    return Produced(
        topic,
        array("q", [0] * len(offsets)),
        array("q", offsets),
        array("q", timestamps_ms),
        records_per_second=0.0,
        mean_value_bytes=0.0,
    )


def _log(path: Path, lines: list[tuple[float, str]]) -> None:
    with path.open("a") as log:
        for answered_at, key in lines:
            log.write(f"{answered_at:.3f} {key}\n")


def test_per_record_the_rate_runs_first_answer_to_last_and_gaps_are_missing(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "arrivals.log"
    _log(log_path, [(99.0, "earlier-case/0/0")])
    arrivals = CaseArrivals(log_path, "t")
    _log(log_path, [
        (100.0, "t/0/0"), (100.5, "t/0/1"), (101.0, "t/0/3"),
        (101.2, "other/0/2"), (101.5, "t/0/1"),
    ])
    backlog = _produced("t", [0, 1, 2, 3], [0, 0, 0, 0])

    arrivals.wait_for_keys(["t/0/0", "t/0/1", "t/0/3"], 1.0)
    drain = drain_of_records(arrivals, backlog, joined_at=None)

    assert drain.records_per_second == pytest.approx(2 / 1.0)
    assert drain.missing == 1
    assert arrivals.duplicates == 1


def test_per_batch_the_rate_counts_mean_batches_after_all_joined(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "arrivals.log"
    arrivals = CaseArrivals(log_path, "t")
    _log(log_path, [
        (10.0, "t/0/0..t/0/99"), (11.0, "t/0/100..t/0/199"),
        (12.0, "t/0/200..t/0/299"), (14.0, "t/0/300..t/0/399"),
    ])
    backlog = _produced("t", list(range(400)), [0] * 400)

    arrivals.settle(0.0)
    whole = drain_of_batches(arrivals, backlog, (), joined_at=None)
    joined = drain_of_batches(arrivals, backlog, (), joined_at=10.5)

    assert whole.records_per_second == pytest.approx(300 / 4.0)
    assert not whole.all_joined
    assert joined.records_per_second == pytest.approx(200 / 3.0)
    assert joined.all_joined


def test_a_batch_times_its_first_and_last_record_less_the_sink_delay(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "arrivals.log"
    arrivals = CaseArrivals(log_path, "t")
    _log(log_path, [(1.100, "t/0/5..t/0/6"), (0.900, "t/0/1..t/0/2")])
    live = _produced("t", [5, 6], [1_000, 1_050])

    arrivals.settle(0.0)
    latencies = added_latencies_ms(arrivals, live, sink_delay_seconds=0.020)

    assert latencies == pytest.approx([30.0, 80.0])
