"""`make chaos`: the chaos scenarios at length, and a table of what the
ledger found.

The tests run each scenario of tests/chaos_scenarios.py briefly; this runs
them with more records, more kills and longer outages. It starts a local
broker of its own, since some scenarios stop and restart it, runs every
scenario (or those named with --only), prints one row per scenario and
writes the rows to a JSON file. Everything it starts, it stops. It exits 0
only if every promise held: nothing missing, no unexpected record,
duplicates within their bound, every exit in time.

The bridges' logs stay in the work directory for a look afterwards; the
harness's own noise (client logs, connections the killed bridges reset)
goes to harness.log there, so that the terminal shows the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos_scenarios import (  # noqa: E402  (needs the path above)
    BROKEN_CONFIGS,
    UNBINDABLE_METRICS_CONFIGS,
    ScenarioResult,
    bad_configurations,
    broker_outage,
    group_churn,
    sigkill_process_restarts,
    sigkill_restarts,
    sigterm_under_load,
    sigterm_with_broker_down,
    slow_api,
)
from tools.local_kafka import LocalKafka  # noqa: E402

CHAOS_STATE_DIR = ROOT / ".cache" / "kafka" / "chaos"
DEFAULT_JSON_PATH = ROOT / ".cache" / "chaos" / "results.json"

Scenario = Callable[[LocalKafka, Path, argparse.Namespace], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "sigkill": lambda broker, work, args: sigkill_restarts(
        broker.bootstrap_servers, work,
        records=args.records, kills=args.kills, seed=args.seed,
    ),
    "sigterm-partition": lambda broker, work, args: sigterm_under_load(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        stops=args.stops, ordering="partition", seed=args.seed,
    ),
    "sigterm-key": lambda broker, work, args: sigterm_under_load(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        stops=args.stops, ordering="key", seed=args.seed,
    ),
    "sigkill-process": lambda broker, work, args: sigkill_process_restarts(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        kills=args.kills, seed=args.seed,
    ),
    "sigterm-key-x2": lambda broker, work, args: sigterm_under_load(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        stops=args.stops, ordering="key", processes=2, seed=args.seed,
    ),
    "broker-down": lambda broker, work, args: sigterm_with_broker_down(
        broker, work, records=args.records, seed=args.seed,
    ),
    "outage": lambda broker, work, args: broker_outage(
        broker, work, rate_per_second=args.rate,
        outage_seconds=args.outage_seconds, seed=args.seed,
    ),
    "slow-api": lambda broker, work, args: slow_api(
        broker.bootstrap_servers, work, slow_seconds=args.slow_seconds,
    ),
    "churn-partition": lambda broker, work, args: group_churn(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        instances=args.instances, cycles=args.cycles,
        ordering="partition", seed=args.seed,
    ),
    "churn-key": lambda broker, work, args: group_churn(
        broker.bootstrap_servers, work, rate_per_second=args.rate,
        instances=args.instances, cycles=args.cycles, ordering="key",
        seed=args.seed,
    ),
    "bad-config": lambda broker, work, args: bad_configurations(
        work, BROKEN_CONFIGS, name="bad-config",
    ),
    "bad-metrics-address": lambda broker, work, args: bad_configurations(
        work, UNBINDABLE_METRICS_CONFIGS, name="bad-metrics-address",
    ),
}

_COLUMNS = (
    ("scenario", 20), ("records", 8), ("kills", 6), ("missing", 8),
    ("duplicates", 11), ("bound", 7), ("max exit s", 11), ("seconds", 8),
    ("result", 6),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_arguments(argv)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="kafka-chaos-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"kafka-bridge chaos, seed {args.seed}; logs in {work_dir}")

    broker = LocalKafka(CHAOS_STATE_DIR)
    print("starting a local Kafka broker")
    broker.start()
    try:
        with _harness_noise_to(work_dir / "harness.log"):
            results = _run_all(broker, work_dir, args)
    finally:
        broker.stop()

    _print_table(results)
    _write_json(args.json, args, results)
    for result in results:
        if not result.passed:
            print(f"\n{result.name}:\n  " + "\n  ".join(result.problems))
    return 0 if all(result.passed for result in results) else 1


def _run_all(
    broker: LocalKafka, work_dir: Path, args: argparse.Namespace
) -> list[ScenarioResult]:
    results = []
    for name in args.only or SCENARIOS:
        print(f"running {name}", flush=True)
        result = SCENARIOS[name](broker, work_dir / name, args)
        print(f"  {_row(result)}", flush=True)
        results.append(result)
    return results


@contextlib.contextmanager
def _harness_noise_to(path: Path) -> Iterator[None]:
    """Send this process's stderr, librdkafka's included, to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as noise:
        os.dup2(noise.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _row(result: ScenarioResult) -> str:
    data = result.as_dict()
    exit_seconds = data["max_exit_seconds"]
    cells = (
        result.name,
        data["records"],
        data["kills"],
        data["missing"],
        data["duplicates"],
        data["duplicate_bound"],
        "-" if exit_seconds is None else f"{exit_seconds:.1f}",
        f"{data['seconds']:.0f}",
        "ok" if result.passed else "FAILED",
    )
    widths = [width for _, width in _COLUMNS]
    return " ".join(
        f"{cell!s:<{width}}" for cell, width in zip(cells, widths, strict=True)
    ).rstrip()


def _print_table(results: list[ScenarioResult]) -> None:
    header = " ".join(f"{name:<{width}}" for name, width in _COLUMNS)
    print(f"\n{header.rstrip()}")
    for result in results:
        print(_row(result))


def _write_json(
    path: Path, args: argparse.Namespace, results: list[ScenarioResult]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "seed": args.seed,
        "finished_wall": time.time(),
        "options": {
            key: value
            for key, value in vars(args).items()
            if key not in ("json", "work_dir")
        },
        "scenarios": [result.as_dict() for result in results],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path}")


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chaos.py",
        description="Kill, stop, starve and cut off kafka-bridge; check "
        "that every record is accounted for.",
    )
    parser.add_argument(
        "--records", type=_positive, default=5000,
        help="records produced up front (sigkill, broker-down)",
    )
    parser.add_argument("--kills", type=_positive, default=5,
                        help="SIGKILLs in the sigkill scenarios")
    parser.add_argument("--stops", type=_positive, default=5,
                        help="SIGTERMs in the sigterm scenarios")
    parser.add_argument(
        "--rate", type=float, default=150.0,
        help="records per second of the steady load (sigterm, sigkill-process, "
        "outage, churn)",
    )
    parser.add_argument("--outage-seconds", type=float, default=15.0,
                        help="how long the broker stays down (outage)")
    parser.add_argument("--slow-seconds", type=float, default=30.0,
                        help="how long the API stays slow (slow-api)")
    parser.add_argument("--instances", type=_positive, default=3,
                        help="bridges in the group (churn)")
    parser.add_argument("--cycles", type=_positive, default=8,
                        help="stop-and-start cycles (churn)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of every random choice")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON_PATH,
                        help="where to write the results "
                        "(default: %(default)s)")
    parser.add_argument("--work-dir", type=Path,
                        help="where the logs go (default: a new temporary "
                        "directory, kept)")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
