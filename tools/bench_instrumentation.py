"""What the bridge's instrumentation costs per record, measured.

Times the metric updates one delivered record makes (the same calls, on the
same prometheus-client objects, with the same labels) and sets them against
the bridge's CPU time per record from `make bench`. A throughput A/B run on
two shared cores would drown a difference of a few percent in its own
noise; this isolates the cost instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka_bridge import metrics  # noqa: E402

RECORDS = 200_000


def one_delivered_record() -> None:
    """The metric calls on the path of a record delivered at once."""
    metrics.child(metrics.CONSUMED, "bench").inc()
    metrics.TRANSFORM_SECONDS.observe(0.00004)
    metrics.child(metrics.ATTEMPT_SECONDS, "primary").observe(0.0007)
    metrics.child(
        metrics.POSTED, "primary", metrics.status_class(204)
    ).inc()
    metrics.child(metrics.DELIVERED, "bench").inc()
    metrics.child(metrics.RECORD_LATENCY, "bench").observe(0.08)


def microseconds_per_record(records: int) -> float:
    """CPU time of the instrumentation of one record, best of 5 runs."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(records):
            one_delivered_record()
        best = min(best, time.process_time() - started)
    return best / records * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench-results.json",
        help="make bench's results, for the bridge's CPU per record",
    )
    args = parser.parse_args()

    cost_us = microseconds_per_record(args.records)
    print(f"instrumentation: {cost_us:.2f} µs of CPU per delivered record")
    if not args.results.exists():
        print(f"({args.results} not found: run make bench for the share)")
        return 0

    results = json.loads(args.results.read_text())
    per_record_ms = results.get("bridge_cpu_ms_per_record")
    if per_record_ms:
        share = cost_us / (per_record_ms * 1000)
        print(
            f"bridge: {per_record_ms:.3f} ms of CPU per record; "
            f"instrumentation is {share:.2%} of it"
        )
        results["instrumentation_us_per_record"] = round(cost_us, 2)
        results["instrumentation_share_of_cpu"] = round(share, 4)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
