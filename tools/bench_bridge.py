"""One bridge case of the bench: run `kafka-bridge run` over a backlog,
time it, then time records sent at half its rate, then stop it.

In order:

1. `kafka-bridge run --config PATH [--processes N]` starts on a backlog
   of its own; the bench polls the group's committed offsets until they
   reach the end of every partition, sampling CPU at each poll;
2. the rate comes from the sink's log, first answer to last, and the CPU
   shares from the samples within that span (start-up left out);
3. latency: for three seconds records are produced at half that rate,
   and each is timed from its Kafka timestamp (when the broker appended
   it) to the sink's answer, less the sink's own delay;
4. peak memory and CPU time are read from /proc before SIGTERM stops the
   bridge, as a service manager would.

With `--processes N` the bridge is a supervisor with N children: memory is
reported for the largest child and for the supervisor apart, CPU for all
of them together.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from tools.bench_arrivals import (
    CaseArrivals,
    Drain,
    added_latencies_ms,
    drain_of_batches,
    drain_of_records,
)
from tools.bench_cases import BATCH_MODE, ONE_PROCESS, BridgeCase
from tools.bench_cpu import CpuMeter, CpuSample, CpuShare, share_between
from tools.bench_records import PARTITIONS, Produced, produce_paced
from tools.procfs import ProcessTable, children_of, peak_rss_mib

BRIDGE_COMMAND = Path(sys.executable).parent / "kafka-bridge"

# The latency records are sent at this share of the rate the bridge
# drained the backlog at (busy, but not saturated) for this long: long
# enough that the first records after the idle moment weigh little.
LATENCY_RATE_FRACTION = 0.5
LATENCY_SECONDS = 3.0
_MINIMUM_LATENCY_RECORDS = 100

_PHASE_TIMEOUT_SECONDS = 900.0
_COMMITTED_TIMEOUT_SECONDS = 10.0
_PROGRESS_POLL_SECONDS = 0.5
# nginx writes its log at least once a second; the slow sink more often.
_LOG_WAIT_SECONDS = 15.0
_LOG_SETTLE_SECONDS = 1.5
_BRIDGE_STOP_TIMEOUT_SECONDS = 30.0
_JOIN_TIMEOUT_SECONDS = 60.0
_HELP_TIMEOUT_SECONDS = 30.0
_BRIDGE_LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class Tuning:
    """What one bench run changes for all its bridge cases."""

    latency_fraction: float = LATENCY_RATE_FRACTION
    # delivery.batch_max_wait_ms of the batch cases; None: the bridge's.
    batch_max_wait_ms: int | None = None


class BridgeCaseError(Exception):
    """The bridge failed or did not finish a phase; the message says how."""


@dataclass(frozen=True)
class SinkTarget:
    """Where a case's bridge POSTs, and how to read what arrived."""

    url: str
    log_path: Path
    delay_seconds: float


@dataclass(frozen=True)
class Memory:
    """Peak resident memory (VmHWM), per process."""

    largest_process_mib: float | None
    supervisor_mib: float | None
    processes: int


@dataclass(frozen=True)
class BridgeRun:
    """What the bridge did in one case."""

    drain: Drain
    wall_records_per_second: float
    cpu: CpuShare | None
    latencies_ms: list[float]
    latency_records: int
    latency_rate_per_second: float
    memory: Memory
    cpu_ms_per_record: float | None
    duplicates: int
    exit_code: int | None
    stop_seconds: float


def bridge_runs_processes() -> bool:
    """Whether this kafka-bridge has `run --processes`."""
    result = subprocess.run(
        [str(BRIDGE_COMMAND), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=_HELP_TIMEOUT_SECONDS,
        check=False,
    )
    return "--processes" in result.stdout


def run_bridge_case(
    case: BridgeCase,
    backlog: Produced,
    *,
    bootstrap: str,
    sink: SinkTarget,
    workers: int,
    work_dir: Path,
    meter: CpuMeter,
    register_pid: Callable[[int | None], None],
    tuning: Tuning = Tuning(),
) -> BridgeRun:
    """Drain the backlog, time the latency records, stop; see the module.

    register_pid is told the bridge's PID while it runs, so that its CPU
    is counted as the bridge's."""
    run = _CaseRun(case, backlog, bootstrap, sink, meter)
    try:
        bridge = run.start(workers, work_dir, tuning.batch_max_wait_ms)
        register_pid(bridge.pid)
        drained = run.drain_backlog()
        live = run.send_latency_records(
            drained.drain, tuning.latency_fraction
        )
        memory = _memory(bridge.pid)
        cpu_seconds = _tree_cpu_seconds(bridge.pid)
        exit_code, stop_seconds = bridge.terminate()
        latencies = run.latencies(live)
    finally:
        run.close()
        register_pid(None)

    return BridgeRun(
        drain=drained.drain,
        wall_records_per_second=drained.wall_records_per_second,
        cpu=drained.cpu,
        latencies_ms=latencies,
        latency_records=live.count,
        latency_rate_per_second=live.records_per_second,
        memory=memory,
        cpu_ms_per_record=(
            None if cpu_seconds is None
            else cpu_seconds * 1000 / (backlog.count + live.count)
        ),
        duplicates=run.arrivals.duplicates,
        exit_code=exit_code,
        stop_seconds=stop_seconds,
    )


@dataclass(frozen=True)
class _Drained:
    drain: Drain
    cpu: CpuShare | None
    wall_records_per_second: float


class _CaseRun:
    """The moving parts of one case: the bridge, the watches on its
    consumer group, the sink's log and the CPU samples."""

    def __init__(
        self,
        case: BridgeCase,
        backlog: Produced,
        bootstrap: str,
        sink: SinkTarget,
        meter: CpuMeter,
    ) -> None:
        self.case = case
        self.backlog = backlog
        self.arrivals = CaseArrivals(sink.log_path, backlog.topic)
        self._bootstrap = bootstrap
        self._sink = sink
        self._meter = meter
        self._group = f"{backlog.topic}-bridge"
        self._commits = _CommitWatch(bootstrap, self._group, backlog.topic)
        self._members = _GroupMembers(
            bootstrap, self._group, case.process_count
        )
        self._samples: list[CpuSample] = []
        self._bridge: _Bridge | None = None
        self._started_at = 0.0

    def start(
        self, workers: int, work_dir: Path, batch_max_wait_ms: int | None
    ) -> _Bridge:
        config = _write_config(
            self.case, self._bootstrap, self._group, self.backlog.topic,
            self._sink, workers, batch_max_wait_ms, work_dir,
        )
        self._look()
        self._started_at = time.monotonic()
        self._bridge = _Bridge.start(
            config, self.case, work_dir / f"{self.case.name}.log"
        )
        return self._bridge

    def drain_backlog(self) -> _Drained:
        """Wait until the backlog is committed; its rate and CPU."""
        bridge = self._running()
        self._commits.wait_for(
            self.backlog.end_offsets(), bridge, on_poll=self._look
        )
        self._samples.append(self._meter.sample())
        wall_rate = self.backlog.count / (time.monotonic() - self._started_at)

        drain = _drain(
            self.case, self.arrivals, self.backlog,
            self._members.all_joined_at,
        )
        return _Drained(drain, _steady_share(self._samples, drain), wall_rate)

    def send_latency_records(self, drain: Drain, fraction: float) -> Produced:
        """Produce at this fraction of the rate the bridge reached on the
        backlog, and wait until all is committed."""
        bridge = self._running()
        # A backlog drained before every process joined would leave their
        # rebalances to the latency records.
        self._members.wait_for_all(bridge)
        live = _produce_latency_records(
            self._bootstrap, self.backlog, drain.records_per_second * fraction
        )
        self._commits.wait_for(_merged_ends(self.backlog, live), bridge)
        return live

    def latencies(self, live: Produced) -> list[float]:
        if self.case.mode == BATCH_MODE:
            self.arrivals.settle(_LOG_SETTLE_SECONDS)
        else:
            self.arrivals.wait_for_keys(live.coordinates(), _LOG_WAIT_SECONDS)
        return added_latencies_ms(
            self.arrivals, live, self._sink.delay_seconds
        )

    def close(self) -> None:
        self._commits.close()
        if self._bridge is not None:
            self._bridge.kill_if_running()

    def _look(self) -> None:
        """At every poll: CPU by role, and whether all processes joined."""
        self._samples.append(self._meter.sample())
        self._members.check()

    def _running(self) -> _Bridge:
        assert self._bridge is not None, "start() starts the bridge first"
        return self._bridge


def _write_config(
    case: BridgeCase,
    bootstrap: str,
    group: str,
    topic: str,
    sink: SinkTarget,
    workers: int,
    batch_max_wait_ms: int | None,
    work_dir: Path,
) -> Path:
    """The bridge's defaults, but for the case's delivery mode, the worker
    count and any batch wait; metrics off, since the bench reads none."""
    settings: dict[str, object] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": [topic],
        },
        "api": {"primary_url": sink.url},
        "pipeline": {"workers": workers},
        "metrics": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    if case.mode == BATCH_MODE:
        delivery: dict[str, object] = {
            "mode": "batch",
            "batch_max_records": case.records_per_post,
        }
        if batch_max_wait_ms is not None:
            delivery["batch_max_wait_ms"] = batch_max_wait_ms
        settings["delivery"] = delivery
    # JSON is YAML, and needs no quoting rules of its own.
    path = work_dir / f"{case.name}.yaml"
    path.write_text(json.dumps(settings, indent=2))
    return path


def _drain(
    case: BridgeCase,
    arrivals: CaseArrivals,
    backlog: Produced,
    joined_at: float | None,
) -> Drain:
    try:
        if case.mode == BATCH_MODE:
            arrivals.settle(_LOG_SETTLE_SECONDS)
            return drain_of_batches(arrivals, backlog, (), joined_at)
        arrivals.wait_for_keys(backlog.coordinates(), _LOG_WAIT_SECONDS)
        return drain_of_records(arrivals, backlog, joined_at)
    except ValueError as error:
        raise BridgeCaseError(f"{case.name}: {error}") from None


def _steady_share(samples: list[CpuSample], drain: Drain) -> CpuShare | None:
    """CPU from the first sample after the first answer to the last one
    before the last answer; the whole run when they are too few."""
    inside = [
        sample for sample in samples
        if drain.first_answer_seconds
        <= sample.wall_seconds
        <= drain.last_answer_seconds
    ]
    first, last = (inside[0], inside[-1]) if len(inside) >= 2 else (
        samples[0], samples[-1]
    )
    return share_between(first, last)


def _produce_latency_records(
    bootstrap: str, backlog: Produced, rate: float
) -> Produced:
    count = max(_MINIMUM_LATENCY_RECORDS, round(rate * LATENCY_SECONDS))
    print(f"  latency: {count:,} more records at {rate:,.0f}/s", flush=True)
    return produce_paced(bootstrap, backlog.topic, backlog.count, count, rate)


def _merged_ends(*batches: Produced) -> dict[int, int]:
    ends: dict[int, int] = {}
    for batch in batches:
        for partition, end in batch.end_offsets().items():
            ends[partition] = max(ends.get(partition, 0), end)
    return ends


def _memory(pid: int) -> Memory:
    """A supervisor's children are the bridge processes; without any,
    the process itself is."""
    children = children_of(pid)
    if not children:
        return Memory(peak_rss_mib(pid), None, 1)
    peaks = [peak for child in children if (peak := peak_rss_mib(child))]
    return Memory(max(peaks, default=None), peak_rss_mib(pid), len(children))


def _tree_cpu_seconds(pid: int) -> float | None:
    table = ProcessTable.read()
    members = table.tree(pid)
    if not members:
        return None
    return sum(table.cpu_seconds[member] for member in members)


class _Bridge:
    """The `kafka-bridge run` process and its log."""

    def __init__(
        self, process: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        self.process = process
        self.log_path = log_path

    @classmethod
    def start(cls, config: Path, case: BridgeCase, log_path: Path) -> _Bridge:
        command = [str(BRIDGE_COMMAND), "run", "--config", str(config)]
        if case.processes != ONE_PROCESS:
            command += ["--processes", case.processes]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def raise_if_exited(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BridgeCaseError(
                f"kafka-bridge exited with status {code} before it was "
                f"done; the end of its log:\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-_BRIDGE_LOG_TAIL_LINES:])

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM, then a bounded wait: the exit code (None if it did not
        exit) and how long it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(
                timeout=_BRIDGE_STOP_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill_if_running(self) -> None:
        """SIGKILL for the bridge and, by their PIDs, any children: they
        run in process groups of their own."""
        if self.process.poll() is not None:
            return
        for child in children_of(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.process.kill()
        self.process.wait()


class _GroupMembers:
    """When every process of a several-process bridge had partitions.

    Its children start one after another, and each that joins the group
    makes the others give up partitions, so the rate of such a case is
    taken from the first POST after the last of them had its share: the
    bridge as it runs, not as it starts. A one-process case needs no such
    moment; its rate leaves out only what comes before its first POST.
    """

    def __init__(self, bootstrap: str, group: str, processes: int) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._group = group
        self._wanted = min(processes, PARTITIONS)
        self.all_joined_at: float | None = None

    def check(self) -> None:
        """Look at the group, once more, unless all had joined already."""
        if self._wanted < 2 or self.all_joined_at is not None:
            return
        futures = self._admin.describe_consumer_groups(
            [self._group], request_timeout=_COMMITTED_TIMEOUT_SECONDS
        )
        try:
            group = futures[self._group].result()
        except KafkaException:
            # Not described yet: the first member has not joined.
            return
        working = [m for m in group.members if m.assignment.topic_partitions]
        stable = group.state == ConsumerGroupState.STABLE
        if stable and len(working) >= self._wanted:
            self.all_joined_at = time.time()

    def wait_for_all(self, bridge: _Bridge) -> None:
        """Bounded wait until every process had joined; on time-out the
        bench goes on, and the latency records show what it cost."""
        if self._wanted < 2:
            return
        pause = threading.Event()
        deadline = time.monotonic() + _JOIN_TIMEOUT_SECONDS
        self.check()
        while self.all_joined_at is None and time.monotonic() < deadline:
            bridge.raise_if_exited()
            pause.wait(_PROGRESS_POLL_SECONDS)
            self.check()


class _CommitWatch:
    """Reads the bridge group's committed offsets, without joining it."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        self._topic = topic

    def wait_for(
        self,
        end_offsets: dict[int, int],
        bridge: _Bridge,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Bounded wait until every partition is committed to its end."""
        pause = threading.Event()
        deadline = time.monotonic() + _PHASE_TIMEOUT_SECONDS
        while not self._reached(end_offsets):
            bridge.raise_if_exited()
            if time.monotonic() > deadline:
                raise BridgeCaseError(
                    f"kafka-bridge did not commit up to {end_offsets} "
                    f"within {_PHASE_TIMEOUT_SECONDS:.0f} s; the end of "
                    f"its log:\n{bridge.log_tail()}"
                )
            pause.wait(_PROGRESS_POLL_SECONDS)
            if on_poll is not None:
                on_poll()

    def close(self) -> None:
        self._consumer.close()

    def _reached(self, end_offsets: dict[int, int]) -> bool:
        wanted = [TopicPartition(self._topic, p) for p in end_offsets]
        committed = self._consumer.committed(
            wanted, timeout=_COMMITTED_TIMEOUT_SECONDS
        )
        return all(
            position.offset >= end_offsets[position.partition]
            for position in committed
        )
