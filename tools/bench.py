"""`make bench`: the bridge's throughput against the two ceilings it has.

Every record costs the bridge a Kafka consume and an HTTP POST. A figure of
records per second means little alone, so the bench also measures each of
those two steps done as barely as Python can, on the same records, machine
and run, and reports the bridge as a fraction of the lower of the two.

In order, on a local broker and an nginx that answers 204 (tools/
nginx_sink.py), with a fresh consumer group for each consumer:

1. produce the records (about 1 KB of JSON each) to a 6-partition topic;
2. raw consume: a bare confluent-kafka loop reads them all;
3. raw POST: as many threads as the bridge has workers POST the bodies the
   bridge would send, built beforehand, through one `requests` session;
4. the bridge: `kafka-bridge run` drains the topic; its rate comes from
   nginx's log, first to last POST, and its peak RSS and CPU from /proc;
5. latency: with the bridge caught up, a further 5 % of records is
   produced at half its rate, and each is timed from its Kafka timestamp
   to the moment nginx answered its POST;
6. the bridge is stopped with SIGTERM, as a service manager does.

During each measured step it also notes how much CPU other processes on
the machine used, since two shared cores make every figure move with them.
The figures are printed and written to bench-results.json with the facts
of the machine. docs/performance.md explains them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import confluent_kafka
import orjson
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

# NewTopic lives here in the documentation; the stubs do not re-export it.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka_bridge.delivery import USER_AGENT  # noqa: E402
from kafka_bridge.records import Record  # noqa: E402
from kafka_bridge.transforms import envelope  # noqa: E402
from tools.local_kafka import KAFKA_VERSION, LocalKafka  # noqa: E402
from tools.nginx_sink import ArrivalLog, NginxSink, nginx_version  # noqa: E402

BENCH_STATE_DIR = ROOT / ".cache" / "kafka" / "bench"
RESULTS_PATH = ROOT / "bench-results.json"
BRIDGE_COMMAND = Path(sys.executable).parent / "kafka-bridge"

DEFAULT_RECORDS = 200_000
DEFAULT_WORKERS = 8
MINIMUM_RECORDS = 5_000
PARTITIONS = 6
CONSUME_BATCH = 500
# librdkafka's default of one second starves a consumer that drains its
# local queue quickly; the bridge uses the same value.
FETCH_QUEUE_BACKOFF_MS = 10

# The latency records are this share of the others, sent at this share of
# the rate the bridge drained the backlog at: busy, but not saturated.
LATENCY_SAMPLE_FRACTION = 0.05
LATENCY_RATE_FRACTION = 0.5

# CPU used by other processes, in cores, above which a step's figures are
# flagged as disturbed by other work.
DISTURBED_AT_CORES = 0.2

# As the bridge's own defaults, so the raw POST loop waits as long.
_POST_TIMEOUT_SECONDS = (3.05, 10.0)
_PHASE_TIMEOUT_SECONDS = 900.0
_TOPIC_TIMEOUT_SECONDS = 30.0
_FLUSH_TIMEOUT_SECONDS = 120.0
_COMMITTED_TIMEOUT_SECONDS = 10.0
_PROGRESS_POLL_SECONDS = 0.5
_LOG_WAIT_SECONDS = 15.0
_BRIDGE_STOP_TIMEOUT_SECONDS = 30.0
_PACING_TICK_SECONDS = 0.002
_CONSUME_TIMEOUT_SECONDS = 0.5
_BRIDGE_LOG_TAIL_LINES = 30


class BenchError(Exception):
    """A step of the bench failed; the message says which and why."""


@dataclass(frozen=True)
class Produced:
    """Where each produced record landed, indexed like the values."""

    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    records_per_second: float
    mean_value_bytes: float

    def keys(self, topic: str) -> list[str]:
        """The Idempotency-Key the bridge sends for each record."""
        places = zip(self.partitions, self.offsets, strict=True)
        return [f"{topic}/{partition}/{offset}" for partition, offset in places]


@dataclass(frozen=True)
class PostCeiling:
    """What the raw POST loop reached, and the CPU each request took."""

    requests_per_second: float
    cpu_ms_per_request: float


@dataclass(frozen=True)
class BridgeRun:
    """What the bridge did while it ran."""

    records_per_second: float
    wall_records_per_second: float
    latencies_ms: list[float]
    latency_rate_per_second: float
    peak_rss_mib: float | None
    cpu_ms_per_record: float | None
    missing: int
    duplicates: int
    exit_code: int | None
    stop_seconds: float


@dataclass(frozen=True)
class Results:
    """The figures of one run, as written to bench-results.json."""

    machine: dict[str, Any]
    finished_at: str
    records: int
    mean_value_bytes: int
    partitions: int
    workers: int
    producer_records_per_second: float
    raw_consume_records_per_second: float
    raw_post_requests_per_second: float
    raw_post_cpu_ms_per_request: float
    bridge_records_per_second: float
    bridge_wall_records_per_second: float
    lower_ceiling: str
    bridge_to_ceiling_ratio: float
    latency_records: int
    latency_rate_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    bridge_peak_rss_mib: float | None
    bridge_cpu_ms_per_record: float | None
    missing: int
    duplicates: int
    bridge_exit_code: int | None
    bridge_stop_seconds: float
    cpu_during_steps: dict[str, CpuShare]

    @property
    def ok(self) -> bool:
        """Nothing lost, and the bridge stopped cleanly."""
        return self.missing == 0 and self.bridge_exit_code == 0

    @property
    def disturbed(self) -> bool:
        """Other processes took a noticeable share of the CPU in a step."""
        return any(
            share.others_cores > DISTURBED_AT_CORES
            for share in self.cpu_during_steps.values()
        )


def record_value(index: int) -> bytes:
    """A JSON order of about 1 KB; the same index gives the same bytes."""
    lines = [
        {
            "sku": f"sku-{(index + line) % 50_000:05d}",
            "quantity": 1 + (index + line) % 4,
            "unit_price_cents": 199 + (index * 31 + line) % 9_800,
        }
        for line in range(12)
    ]
    return orjson.dumps(
        {
            "order_id": f"order-{index:09d}",
            "customer_id": f"customer-{index % 997}",
            "status": "paid",
            "currency": "EUR",
            "amount_cents": (index * 7_919) % 1_000_000,
            "lines": lines,
            "shipping": {
                "name": "Jordan Example",
                "street": f"{index % 300 + 1} Harbour Road",
                "city": "Rotterdam",
                "postcode": f"{3000 + index % 999} AB",
                "country": "NL",
            },
            "note": "leave the parcel with the neighbour if nobody answers",
        }
    )


def record_key(index: int) -> bytes:
    """Orders of one customer share a key, and so a partition."""
    return f"customer-{index % 997}".encode()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 if the bridge lost nothing and stopped cleanly."""
    options = _parse_arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = _run(options.records, options.workers)
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped")
        return 130

    _print_results(results)
    RESULTS_PATH.write_text(json.dumps(asdict(results), indent=2) + "\n")
    print(f"\nwritten to {RESULTS_PATH.name}")
    return 0 if results.ok else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that what the bench started stops.
    raise KeyboardInterrupt


@dataclass
class _Site:
    """Where this run measures: its broker, topic, sink and directory, and
    the processes it started, whose CPU is its own."""

    broker: LocalKafka
    bootstrap: str
    topic: str
    sink: NginxSink
    work: Path
    bridge_pid: int | None = None

    @property
    def bridge_group(self) -> str:
        return f"{self.topic}-bridge"

    def own_pids(self) -> list[int]:
        pids = [os.getpid(), *self.sink.process_ids()]
        for pid in (self.broker.running_pid(), self.bridge_pid):
            if pid is not None:
                pids.append(pid)
        return pids


def _run(records: int, workers: int) -> Results:
    with contextlib.ExitStack() as stack:
        machine = _machine_facts()
        site = _set_up(stack)
        cpu = _CpuMeter(site.own_pids)

        _say(f"producing {records:,} records to {site.topic}")
        produced = _produce_backlog(site.bootstrap, site.topic, records)
        _say("raw consume loop")
        with cpu.step("raw_consume"):
            consume_rate = _measure_raw_consume(
                site.bootstrap, site.topic, records
            )
        _say(f"raw POST loop, {workers} threads")
        with cpu.step("raw_post"):
            post = _measure_raw_post(
                site.sink.url, site.topic, produced, workers
            )
        _say(f"kafka-bridge, {workers} workers")
        bridge = _measure_bridge(site, produced, workers, stack, cpu)

    return _results(
        machine, records, workers, produced, consume_rate, post, bridge,
        cpu.shares,
    )


def _say(message: str) -> None:
    print(message, flush=True)


def _set_up(stack: contextlib.ExitStack) -> _Site:
    """A work directory, a broker, the sink and a new topic."""
    work = Path(stack.enter_context(
        tempfile.TemporaryDirectory(prefix="kafka-bridge-bench-")
    ))
    _say("starting a local Kafka broker (the first run fetches its jars)")
    broker = LocalKafka(BENCH_STATE_DIR)
    stack.callback(broker.stop)
    bootstrap = broker.start()

    sink = stack.enter_context(NginxSink(work / "nginx"))
    return _Site(broker, bootstrap, _create_topic(bootstrap), sink, work)


@dataclass(frozen=True)
class CpuShare:
    """CPU in use during one step, in cores: on the whole machine, and by
    processes the bench did not start."""

    machine_cores: float
    others_cores: float


class _CpuMeter:
    """Splits the CPU used during each step between the bench's own
    processes and everything else, so that a run disturbed by other work
    on the machine says so. Reads /proc; elsewhere it measures nothing."""

    def __init__(self, own_pids: Callable[[], list[int]]) -> None:
        self._own_pids = own_pids
        self.shares: dict[str, CpuShare] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        machine_before = _machine_busy_seconds()
        own_before = self._own_seconds()
        started = time.monotonic()
        yield
        elapsed_seconds = time.monotonic() - started
        machine_after = _machine_busy_seconds()
        if machine_before is None or machine_after is None:
            return

        machine_cores = (machine_after - machine_before) / elapsed_seconds
        own_seconds = sum(
            seconds - own_before.get(pid, 0.0)
            for pid, seconds in self._own_seconds().items()
        )
        others = max(0.0, machine_cores - own_seconds / elapsed_seconds)
        self.shares[name] = CpuShare(
            round(machine_cores, 2), round(others, 2)
        )

    def _own_seconds(self) -> dict[int, float]:
        used = {pid: _cpu_seconds(pid) for pid in self._own_pids()}
        return {pid: seconds for pid, seconds in used.items() if seconds}


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent running anything since boot."""
    try:
        first_line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    # user nice system idle iowait irq softirq ...: idle and iowait are
    # not work, and steal is the hypervisor's, not this machine's.
    user, nice, system, _, _, irq, softirq = map(
        int, first_line.split()[1:8]
    )
    busy_ticks = user + nice + system + irq + softirq
    return busy_ticks / os.sysconf("SC_CLK_TCK")


def _create_topic(bootstrap: str) -> str:
    topic = f"bench-orders-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    for future in futures.values():
        future.result(timeout=_TOPIC_TIMEOUT_SECONDS)
    return topic


# -- 1. produce --------------------------------------------------------


def _produce_backlog(bootstrap: str, topic: str, count: int) -> Produced:
    """Produce as fast as the broker takes records; time to the last ack."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
        }
    )
    landed = _Landed(count)
    values = [record_value(index) for index in range(count)]

    started = time.monotonic()
    for index, value in enumerate(values):
        _produce_one(producer, topic, index, value, landed, index)
    _flush(producer)
    elapsed_seconds = time.monotonic() - started

    mean_bytes = sum(map(len, values)) / count
    return landed.produced(count / elapsed_seconds, mean_bytes)


class _Landed:
    """Delivery reports, kept by record index; the first error is kept."""

    def __init__(self, count: int) -> None:
        self.partitions = [-1] * count
        self.offsets = [-1] * count
        self.timestamps_ms = [0] * count
        self.error: str | None = None

    def report(self, slot: int, error: Any, message: Any) -> None:
        if error is not None:
            self.error = self.error or str(error)
            return
        self.partitions[slot] = message.partition()
        self.offsets[slot] = message.offset()
        self.timestamps_ms[slot] = message.timestamp()[1]

    def produced(
        self, records_per_second: float, mean_value_bytes: float
    ) -> Produced:
        if self.error is not None:
            raise BenchError(f"the broker refused a record: {self.error}")
        return Produced(
            self.partitions, self.offsets, self.timestamps_ms,
            records_per_second, mean_value_bytes,
        )


def _produce_one(
    producer: Producer,
    topic: str,
    index: int,
    value: bytes,
    landed: _Landed,
    slot: int,
) -> None:
    report = functools.partial(landed.report, slot)
    while True:
        try:
            producer.produce(
                topic, value=value, key=record_key(index), on_delivery=report
            )
            break
        except BufferError:
            # The local queue is full: let deliveries drain it, then retry.
            producer.poll(0.05)
    producer.poll(0)


def _flush(producer: Producer) -> None:
    if producer.flush(_FLUSH_TIMEOUT_SECONDS) != 0:
        raise BenchError(
            f"the broker did not acknowledge every record within "
            f"{_FLUSH_TIMEOUT_SECONDS:.0f} s; see {BENCH_STATE_DIR}/broker.log"
        )


# -- 2. raw consume ----------------------------------------------------


def _measure_raw_consume(bootstrap: str, topic: str, count: int) -> float:
    """Records per second of a bare consume loop, first batch to last.

    The time to join the group and get the first batch is left out, as it
    is for the bridge's rate.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-raw-consume",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
    )
    consumer.subscribe([topic])
    try:
        return _consume_all(consumer, count)
    finally:
        consumer.close()


def _consume_all(consumer: Consumer, count: int) -> float:
    received = 0
    first_batch = 0
    first_at = 0.0
    deadline = time.monotonic() + _PHASE_TIMEOUT_SECONDS

    while received < count:
        if time.monotonic() > deadline:
            raise BenchError(
                f"the raw consume loop read {received:,} of {count:,} "
                f"records in {_PHASE_TIMEOUT_SECONDS:.0f} s"
            )
        batch = consumer.consume(
            num_messages=CONSUME_BATCH, timeout=_CONSUME_TIMEOUT_SECONDS
        )
        _raise_consume_errors(batch)
        if batch and not received:
            first_at, first_batch = time.monotonic(), len(batch)
        received += len(batch)

    return (received - first_batch) / (time.monotonic() - first_at)


def _raise_consume_errors(batch: Iterable[Any]) -> None:
    for message in batch:
        error = message.error()
        if error is not None:
            raise BenchError(f"the raw consume loop failed: {error}")


# -- 3. raw POST -------------------------------------------------------


def _measure_raw_post(
    url: str, topic: str, produced: Produced, threads: int
) -> PostCeiling:
    """Requests per second of threads POSTing ready bodies, no Kafka.

    The bodies are the bridge's own envelopes of the same records, with
    the same headers; only their Idempotency-Key says "raw" instead of
    the topic, so nginx's log keeps the two runs apart.
    """
    keys = [key.replace(topic, "raw", 1) for key in produced.keys(topic)]
    poster = _RawPoster(url, _envelopes(topic, produced), keys, threads)
    cpu_started = time.process_time()
    try:
        elapsed_seconds = poster.run()
    finally:
        poster.close()
    cpu_seconds = time.process_time() - cpu_started

    if poster.failures:
        raise BenchError(f"the raw POST loop failed: {poster.failures[0]}")
    return PostCeiling(
        len(keys) / elapsed_seconds, cpu_seconds * 1000 / len(keys)
    )


def _envelopes(topic: str, produced: Produced) -> list[bytes]:
    return [
        envelope(
            Record(
                topic=topic,
                partition=produced.partitions[index],
                offset=produced.offsets[index],
                key=record_key(index),
                value=record_value(index),
                timestamp_ms=produced.timestamps_ms[index],
            )
        )
        for index in range(len(produced.offsets))
    ]


class _RawPoster:
    """Threads that POST every body once, each its own share, through one
    session whose pool holds a connection per thread, as the bridge's."""

    def __init__(
        self, url: str, bodies: list[bytes], keys: list[str], threads: int
    ) -> None:
        self._url = url
        self._bodies = bodies
        self._keys = keys
        self._session = _session(threads)
        self._start = threading.Barrier(threads + 1)
        self._threads = [
            threading.Thread(
                target=self._post_share,
                args=(range(first, len(bodies), threads),),
                name=f"raw-post-{first}",
            )
            for first in range(threads)
        ]
        self.failures: list[str] = []

    def run(self) -> float:
        """POST them all; the seconds from the common start to the end."""
        for thread in self._threads:
            thread.start()
        self._start.wait()
        started = time.monotonic()
        _join_all(self._threads, "raw POST")
        return time.monotonic() - started

    def close(self) -> None:
        self._session.close()

    def _post_share(self, indexes: range) -> None:
        self._start.wait()
        for index in indexes:
            failure = self._post(index)
            if failure is not None:
                self.failures.append(failure)
                return

    def _post(self, index: int) -> str | None:
        try:
            response = self._session.post(
                self._url,
                data=self._bodies[index],
                headers={"Idempotency-Key": self._keys[index]},
                timeout=_POST_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            return f"{type(error).__name__}: {error}"

        # Read and released as the bridge does, to reuse the connection.
        _ = response.content
        response.close()
        if response.status_code != 204:
            return f"nginx answered {response.status_code}"
        return None


def _session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=1, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("http://", adapter)
    session.headers.update(
        {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    return session


def _join_all(threads: list[threading.Thread], what: str) -> None:
    deadline = time.monotonic() + _PHASE_TIMEOUT_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise BenchError(
            f"the {what} loop did not finish in {_PHASE_TIMEOUT_SECONDS:.0f} s"
        )


# -- 4 to 6. the bridge ------------------------------------------------


def _measure_bridge(
    site: _Site,
    produced: Produced,
    workers: int,
    stack: contextlib.ExitStack,
    cpu: _CpuMeter,
) -> BridgeRun:
    """Drain the backlog, then time the latency records, then stop."""
    arrivals = _Arrivals(site.sink.arrivals, site.topic)
    watch = _CommitWatch(site.bootstrap, site.bridge_group, site.topic)
    stack.callback(watch.close)

    with cpu.step("bridge"):
        started = time.monotonic()
        bridge = _start_bridge(site, workers, stack)
        watch.wait_for(_end_offsets(produced), bridge)
        wall_rate = len(produced.offsets) / (time.monotonic() - started)

    backlog = arrivals.times(produced.keys(site.topic))
    rate = _steady_rate(list(backlog.values()))

    live = _produce_latency_records(site, len(produced.offsets), rate)
    watch.wait_for(_end_offsets(produced, live), bridge)
    peak_rss_mib = _peak_rss_mib(bridge.pid)
    cpu_seconds = _cpu_seconds(bridge.pid)
    exit_code, stop_seconds = _terminate(bridge)
    latencies_ms = _latencies_ms(arrivals, site.topic, live)

    return BridgeRun(
        records_per_second=rate,
        wall_records_per_second=wall_rate,
        latencies_ms=latencies_ms,
        latency_rate_per_second=live.records_per_second,
        peak_rss_mib=peak_rss_mib,
        cpu_ms_per_record=_per_record_ms(
            cpu_seconds, len(produced.offsets) + len(live.offsets)
        ),
        missing=arrivals.missing,
        duplicates=arrivals.duplicates,
        exit_code=exit_code,
        stop_seconds=stop_seconds,
    )


def _start_bridge(
    site: _Site, workers: int, stack: contextlib.ExitStack
) -> _Bridge:
    config = _write_bridge_config(site, workers)
    log_path = site.work / "bridge.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(BRIDGE_COMMAND), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    bridge = _Bridge(process, log_path)
    stack.callback(bridge.kill_if_running)
    site.bridge_pid = process.pid
    return bridge


def _write_bridge_config(site: _Site, workers: int) -> Path:
    # JSON is YAML, and needs no quoting rules of its own.
    path = site.work / "bridge.yaml"
    settings = {
        "kafka": {
            "bootstrap_servers": site.bootstrap,
            "group_id": site.bridge_group,
            "topics": [site.topic],
        },
        "api": {"primary_url": site.sink.url},
        "pipeline": {
            "workers": workers,
            "queue_capacity": 10_000,
            "batch_size": CONSUME_BATCH,
        },
        "metrics": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    path.write_text(json.dumps(settings, indent=2))
    return path


class _Bridge:
    """The `kafka-bridge run` process and its log."""

    def __init__(
        self, process: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def raise_if_exited(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchError(
                f"kafka-bridge exited with status {code} before it was "
                f"done; the end of its log:\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-_BRIDGE_LOG_TAIL_LINES:])

    def kill_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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

    def wait_for(self, end_offsets: dict[int, int], bridge: _Bridge) -> None:
        """Bounded wait until every partition is committed to its end."""
        pause = threading.Event()
        deadline = time.monotonic() + _PHASE_TIMEOUT_SECONDS
        while not self._reached(end_offsets):
            bridge.raise_if_exited()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"kafka-bridge did not commit up to {end_offsets} within "
                    f"{_PHASE_TIMEOUT_SECONDS:.0f} s; the end of its log:\n"
                    f"{bridge.log_tail()}"
                )
            pause.wait(_PROGRESS_POLL_SECONDS)

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


def _end_offsets(*batches: Produced) -> dict[int, int]:
    """Per partition, the offset after the last record produced to it."""
    ends = dict.fromkeys(range(PARTITIONS), 0)
    for batch in batches:
        places = zip(batch.partitions, batch.offsets, strict=True)
        for partition, offset in places:
            ends[partition] = max(ends[partition], offset + 1)
    return ends


class _Arrivals:
    """The bridge's POSTs as nginx logged them, by Idempotency-Key.

    A key keeps the time of its first POST; another POST of it counts as
    a duplicate. Keys of the raw POST loop, in the same log, are skipped.
    """

    def __init__(self, log: ArrivalLog, topic: str) -> None:
        self._log = log
        self._prefix = f"{topic}/"
        self._first_seen: dict[str, float] = {}
        self.duplicates = 0
        self.missing = 0

    def times(self, keys: list[str]) -> dict[str, float]:
        """When nginx answered each key that reached it.

        nginx writes its log buffer once a second, hence a bounded wait.
        A key still absent after it was committed but never delivered; it
        is counted in `missing`.
        """
        pause = threading.Event()
        deadline = time.monotonic() + _LOG_WAIT_SECONDS
        self._read()
        while not self._has_all(keys) and time.monotonic() < deadline:
            pause.wait(_PROGRESS_POLL_SECONDS)
            self._read()

        found = {
            key: self._first_seen[key]
            for key in keys
            if key in self._first_seen
        }
        self.missing += len(keys) - len(found)
        return found

    def _has_all(self, keys: list[str]) -> bool:
        return all(key in self._first_seen for key in keys)

    def _read(self) -> None:
        for arrival in self._log.read():
            key = arrival.idempotency_key
            if not key.startswith(self._prefix):
                continue
            if key in self._first_seen:
                self.duplicates += 1
            else:
                self._first_seen[key] = arrival.answered_at_seconds


def _steady_rate(answered_at_seconds: list[float]) -> float:
    """Records per second from nginx's first answer to its last."""
    if len(answered_at_seconds) < 2:
        raise BenchError("nginx logged too few of the bridge's records")
    span_seconds = max(answered_at_seconds) - min(answered_at_seconds)
    # nginx logs milliseconds; a span shorter than one would divide by 0.
    return (len(answered_at_seconds) - 1) / max(span_seconds, 1e-3)


def _produce_latency_records(
    site: _Site, first_index: int, bridge_rate: float
) -> Produced:
    rate = bridge_rate * LATENCY_RATE_FRACTION
    count = max(1, int(first_index * LATENCY_SAMPLE_FRACTION))
    _say(f"latency: {count:,} more records at {rate:,.0f}/s")
    return _produce_paced(site, first_index, count, rate)


def _produce_paced(
    site: _Site, first_index: int, count: int, rate: float
) -> Produced:
    """Produce at a steady rate, each record sent at once (linger.ms 0),
    so that the producer adds next to nothing to the latency."""
    producer = Producer({"bootstrap.servers": site.bootstrap, "linger.ms": 0})
    landed = _Landed(count)
    pause = threading.Event()
    started = time.monotonic()
    sent = 0
    value_bytes = 0

    while sent < count:
        due = min(count, 1 + int((time.monotonic() - started) * rate))
        for slot in range(sent, due):
            index = first_index + slot
            value = record_value(index)
            value_bytes += len(value)
            _produce_one(producer, site.topic, index, value, landed, slot)
        sent = due
        pause.wait(_PACING_TICK_SECONDS)
    _flush(producer)

    return landed.produced(rate, value_bytes / count)


def _latencies_ms(
    arrivals: _Arrivals, topic: str, live: Produced
) -> list[float]:
    """Sorted: nginx's answer minus the record's Kafka timestamp."""
    keys = live.keys(topic)
    answered = arrivals.times(keys)
    return sorted(
        answered[key] * 1000 - timestamp_ms
        for key, timestamp_ms in zip(keys, live.timestamps_ms, strict=True)
        if key in answered
    )


def _peak_rss_mib(pid: int) -> float | None:
    """The process's high-water resident set (VmHWM), where /proc has it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _per_record_ms(seconds: float | None, records: int) -> float | None:
    return None if seconds is None else seconds * 1000 / records


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU the process has used, where /proc has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may hold spaces, in brackets.
    fields = stat.rpartition(")")[2].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


def _terminate(bridge: _Bridge) -> tuple[int | None, float]:
    """SIGTERM, then a bounded wait: the exit code (None if it did not
    exit) and how long it took."""
    started = time.monotonic()
    bridge.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = bridge.process.wait(
            timeout=_BRIDGE_STOP_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


# -- results -----------------------------------------------------------


def _results(
    machine: dict[str, Any],
    records: int,
    workers: int,
    produced: Produced,
    consume_rate: float,
    post: PostCeiling,
    bridge: BridgeRun,
    cpu_shares: dict[str, CpuShare],
) -> Results:
    lower_name, lower_rate = min(
        ("raw_consume", consume_rate), ("raw_post", post.requests_per_second),
        key=lambda pair: pair[1],
    )
    return Results(
        machine=machine,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        records=records,
        mean_value_bytes=round(produced.mean_value_bytes),
        partitions=PARTITIONS,
        workers=workers,
        producer_records_per_second=round(produced.records_per_second, 1),
        raw_consume_records_per_second=round(consume_rate, 1),
        raw_post_requests_per_second=round(post.requests_per_second, 1),
        raw_post_cpu_ms_per_request=round(post.cpu_ms_per_request, 3),
        bridge_records_per_second=round(bridge.records_per_second, 1),
        bridge_wall_records_per_second=round(
            bridge.wall_records_per_second, 1
        ),
        lower_ceiling=lower_name,
        bridge_to_ceiling_ratio=round(
            bridge.records_per_second / lower_rate, 3
        ),
        latency_records=len(bridge.latencies_ms),
        latency_rate_per_second=round(bridge.latency_rate_per_second, 1),
        latency_p50_ms=_percentile(bridge.latencies_ms, 0.50),
        latency_p99_ms=_percentile(bridge.latencies_ms, 0.99),
        bridge_peak_rss_mib=_rounded(bridge.peak_rss_mib, 1),
        bridge_cpu_ms_per_record=_rounded(bridge.cpu_ms_per_record, 3),
        missing=bridge.missing,
        duplicates=bridge.duplicates,
        bridge_exit_code=bridge.exit_code,
        bridge_stop_seconds=round(bridge.stop_seconds, 2),
        cpu_during_steps=cpu_shares,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _percentile(
    sorted_values: list[float], fraction: float
) -> float | None:
    """Nearest-rank percentile of values sorted in ascending order."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return round(sorted_values[index], 1)


def _print_results(results: Results) -> None:
    machine = results.machine
    print(
        f"\nkafka-bridge bench: {results.records:,} records of "
        f"{results.mean_value_bytes:,} bytes of JSON, {results.partitions} "
        f"partitions, {results.workers} workers\n"
        f"machine: {machine['cpu_model']}, {machine['cores']} cores; "
        f"Python {machine['python']}; librdkafka {machine['librdkafka']}; "
        f"{machine['nginx']}; Kafka {machine['kafka']}; load average "
        f"{machine['load_average_before']:.2f} before the run\n"
    )
    ceiling = results.lower_ceiling.replace("_", " ")
    rss = results.bridge_peak_rss_mib
    rows = [
        ("producer", f"{results.producer_records_per_second:>9,.0f}",
         "records/s"),
        ("raw consume", f"{results.raw_consume_records_per_second:>9,.0f}",
         "records/s  (ceiling)"),
        ("raw POST", f"{results.raw_post_requests_per_second:>9,.0f}",
         "requests/s (ceiling)"),
        ("bridge", f"{results.bridge_records_per_second:>9,.0f}",
         "records/s  (first to last POST)"),
        ("bridge, with start",
         f"{results.bridge_wall_records_per_second:>9,.0f}",
         "records/s  (process start to last commit)"),
        ("bridge / ceiling", f"{results.bridge_to_ceiling_ratio:>9.2f}",
         f"of the lower ceiling, {ceiling}"),
        ("latency p50", _figure(results.latency_p50_ms),
         f"ms produce to POST ({results.latency_records:,} records at "
         f"{results.latency_rate_per_second:,.0f}/s)"),
        ("latency p99", _figure(results.latency_p99_ms), "ms"),
        ("bridge peak RSS", _figure(rss), "MiB (VmHWM)"),
        ("CPU per POST", _figure(results.raw_post_cpu_ms_per_request, 2),
         "ms in the raw POST loop"),
        ("CPU per record", _figure(results.bridge_cpu_ms_per_record, 2),
         "ms in the bridge, start-up included"),
        ("missing", f"{results.missing:>9,}",
         f"records; {results.duplicates:,} duplicates"),
        ("bridge exit", f"{results.bridge_exit_code!s:>9}",
         f"after SIGTERM, in {results.bridge_stop_seconds:.1f} s"),
    ]
    for name, figure, unit in rows:
        print(f"  {name:<19} {figure}  {unit}")
    _print_cpu_shares(results)


def _print_cpu_shares(results: Results) -> None:
    shares = results.cpu_during_steps
    if not shares:
        return
    print("\n  CPU in use, in cores (of the machine / by other processes):")
    for name, share in shares.items():
        print(
            f"    {name.replace('_', ' '):<17} {share.machine_cores:4.2f} / "
            f"{share.others_cores:4.2f}"
        )
    if results.disturbed:
        print(
            "  other work took CPU during this run, so its figures are low "
            "and uneven; run it again on a quieter machine"
        )


def _figure(value: float | None, digits: int = 1) -> str:
    return "     none" if value is None else f"{value:>9.{digits}f}"


def _machine_facts() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": confluent_kafka.__version__,
        "kafka": KAFKA_VERSION,
        "nginx": nginx_version(),
        "kernel": platform.release(),
        # Other work on the machine slows every figure; this shows it.
        "load_average_before": round(os.getloadavg()[0], 2),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Measure kafka-bridge against the raw consume and POST "
        "ceilings on a local broker and an nginx sink.",
    )
    parser.add_argument(
        "--records", type=_count("--records", MINIMUM_RECORDS),
        default=DEFAULT_RECORDS,
        help="records to produce (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=_count("--workers", 1), default=DEFAULT_WORKERS,
        help="bridge workers, and threads of the raw POST loop "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def _count(option: str, minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least minimum, or a message
    naming the option, the rule and the bad value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number of at least {minimum:,}, "
                f"not {text!r}; leave it out for the default"
            )
        return value

    return parse


if __name__ == "__main__":
    sys.exit(main())
