"""`make demo`: the bridge end to end on a local Kafka and a local API.

Starts a local broker and a local HTTP API, creates a topic, runs
`kafka-bridge run` as the daemon users run, produces sample records once it
has joined its group, waits until the API has every record, stops the
bridge with SIGTERM as a service manager would, and prints what happened.
Everything it started, it stops; it exits 0 only if nothing was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    # NewTopic is public API, but the package's stubs do not re-export it.
    AdminClient,
    NewTopic,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.local_api import LocalApi  # noqa: E402
from tools.local_kafka import LocalKafka  # noqa: E402

DEMO_STATE_DIR = ROOT / ".cache" / "kafka" / "demo"
PARTITIONS = 6
WAIT_SECONDS = 120.0
STOP_SECONDS = 30.0


@dataclass(frozen=True)
class Summary:
    """What the demo measured."""

    produced: int
    delivered: int
    duplicates: int
    missing: int
    records_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    exit_code: int | None
    stop_seconds: float

    def print(self) -> None:
        rows = [
            ("produced", f"{self.produced}"),
            ("delivered", f"{self.delivered}"),
            ("duplicates", f"{self.duplicates}"),
            ("missing", f"{self.missing}"),
            ("throughput", f"{self.records_per_second:,.0f} records/s"),
            ("latency p50", f"{self.latency_p50_ms:.1f} ms (produce to POST)"),
            ("latency p99", f"{self.latency_p99_ms:.1f} ms"),
            ("bridge exit", f"{self.exit_code} after SIGTERM, "
             f"in {self.stop_seconds:.1f} s"),
        ]
        print("\nkafka-bridge demo")
        for name, value in rows:
            print(f"  {name:<12} {value}")

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.exit_code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kafka-bridge-demo-") as work:
        kafka = LocalKafka(DEMO_STATE_DIR)
        print("starting a local Kafka broker (first run fetches its jars)")
        bootstrap = kafka.start()
        try:
            with LocalApi() as api:
                summary = _run_demo(bootstrap, api, Path(work), args.records)
        finally:
            kafka.stop()

    summary.print()
    return 0 if summary.ok else 1


def _run_demo(
    bootstrap: str, api: LocalApi, work: Path, records: int
) -> Summary:
    topic = f"demo-events-{int(time.time())}"
    _create_topic(bootstrap, topic)
    config = _write_config(work, bootstrap, topic, api.url)
    log_path = work / "bridge.log"

    print(f"running kafka-bridge on topic {topic}; its log: {log_path}")
    with log_path.open("wb") as log_file:
        bridge = subprocess.Popen(
            [str(Path(sys.executable).parent / "kafka-bridge"),
             "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_log(log_path, "partitions_assigned", bridge)
            print(f"producing {records} records")
            produced = _produce(bootstrap, topic, records)
            started = time.monotonic()
            api.wait_for_count(produced, WAIT_SECONDS)
            elapsed = time.monotonic() - started
            exit_code, stop_seconds = _terminate(bridge)
        finally:
            if bridge.poll() is None:
                bridge.kill()
                bridge.wait()

    return _summarise(api, produced, elapsed, exit_code, stop_seconds)


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    for future in futures.values():
        future.result(timeout=WAIT_SECONDS)


def _write_config(work: Path, bootstrap: str, topic: str, url: str) -> Path:
    path = work / "config.yaml"
    path.write_text(
        json.dumps(
            {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "group_id": f"{topic}-bridge",
                    "topics": [topic],
                },
                "api": {"primary_url": url},
                "pipeline": {"workers": 8},
                "metrics": {"enabled": False},
                "logging": {"format": "json"},
            },
            indent=2,
        )
    )
    return path


def _wait_for_log(
    log_path: Path, event: str, process: subprocess.Popen[bytes]
) -> None:
    """Bounded wait for an event name in the bridge's log."""
    pause = threading.Event()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if event in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise SystemExit(
                f"kafka-bridge exited with {process.returncode}; "
                f"see {log_path}"
            )
        pause.wait(0.1)
    raise SystemExit(f"no {event!r} in {log_path} after {WAIT_SECONDS} s")


def _produce(bootstrap: str, topic: str, count: int) -> int:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5}
    )
    for index in range(count):
        value = {"id": f"demo-{index}", "amount": index % 1000,
                 "note": "sample order " * 4}
        producer.produce(
            topic, key=f"customer-{index % 97}", value=json.dumps(value)
        )
        producer.poll(0)
    if producer.flush(WAIT_SECONDS) != 0:
        raise SystemExit("the broker did not acknowledge every record")
    return count


def _terminate(process: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


def _summarise(
    api: LocalApi,
    produced: int,
    elapsed_seconds: float,
    exit_code: int | None,
    stop_seconds: float,
) -> Summary:
    received = api.received()
    ids = [request.json()["value"]["id"] for request in received]
    latencies_ms = sorted(
        request.received_wall * 1000 - request.json()["timestamp_ms"]
        for request in received
    )
    unique = set(ids)
    return Summary(
        produced=produced,
        delivered=len(unique),
        duplicates=len(ids) - len(unique),
        missing=produced - len(unique),
        records_per_second=len(unique) / max(elapsed_seconds, 1e-9),
        latency_p50_ms=_percentile(latencies_ms, 0.50),
        latency_p99_ms=_percentile(latencies_ms, 0.99),
        exit_code=exit_code,
        stop_seconds=stop_seconds,
    )


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
