"""Chaos scenarios: the bridge killed, stopped, starved and cut off from its
broker, with the ledger judging every run.

Each scenario runs the daemon as users run it (`python -m kafka_bridge.cli
run --config F`, its log in a file, stopped by PID) against a real broker
and a real HTTP API on loopback, and takes its size as arguments: the tests
run the scenarios short, `tools/chaos.py` long. A scenario does not assert:
it returns a `ScenarioResult` that lists every promise that did not hold,
with its evidence, so that a long run reports on all of them.

Bounds the scenarios hold the bridge to:

- Duplicates after a SIGKILL: at most one in-flight window per kill, the
  queue capacity plus one record per worker plus one poll batch (the most
  a bridge holds consumed and uncommitted; see `in_flight_window`).
- Duplicates after a SIGTERM: none, in every ordering: a clean stop works
  off the queue before it commits (see `sigterm_under_load`).
- Duplicates around a broker outage: one window, plus the records the
  bridge delivered while the broker was away, which it could not commit.
- Duplicates when group members come and go: at most one in ten records
  with `ordering: partition`; one window per member and cycle with `key`
  or `none` (see `group_churn`).
- Exit after SIGTERM: within `pipeline.shutdown_deadline_seconds` plus
  `EXIT_MARGIN_SECONDS` for the interpreter to start and end.
- Memory under a slow API: the process grows by at most one in-flight
  window of records plus `RSS_ALLOWANCE_MIB` (the interpreter warming up,
  the client's fetch buffers), while a backlog of twice that waits in
  Kafka: a bridge that read ahead without bound would outgrow it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import create_topic, unique_topic_name
from tests.ledger import (
    LedgerProducer,
    Verdict,
    dead_letter_coordinates,
    dropped_coordinates,
    judge,
    receipts_of,
    settle,
)
from tools.local_api import LocalApi
from tools.local_kafka import LocalKafka

# The pipeline every scenario starts from: the default ordering, and a
# queue small enough that the in-flight window, and so the duplicate
# bound, stays small.
BASE_PIPELINE: Mapping[str, Any] = {
    "workers": 4,
    "queue_capacity": 100,
    "batch_size": 50,
    "ordering": "key",
    "shutdown_deadline_seconds": 5.0,
}
EXIT_MARGIN_SECONDS = 5.0
# Each request takes this long at the API, so that records are in flight
# when a kill or a stop comes.
IN_FLIGHT_DELAY_SECONDS = 0.01
# One record in this many is not JSON and must end in the dead-letter topic.
POISON_EVERY = 97
# The broker's smallest allowed session: a killed member's partitions move
# to the others after this long.
SESSION_TIMEOUT_MS = 6000
RSS_ALLOWANCE_MIB = 16.0

WAIT_SECONDS = 90.0
SETTLE_SECONDS = 120.0
_DLQ_READ_SECONDS = 60.0
_PRODUCE_FLUSH_SECONDS = 60.0
_LOG_CHECK_SECONDS = 0.1
_LOAD_TICK_SECONDS = 0.05
_LOAD_MAX_SECONDS = 3600.0
_RSS_SAMPLE_SECONDS = 0.5
_CLI_TIMEOUT_SECONDS = 30.0
_TOPIC_DELETE_TIMEOUT_SECONDS = 10.0
_METRICS_TIMEOUT_SECONDS = 5.0
_LOG_TAIL_LINES = 15
_MIB = 1024 * 1024
_METRICS_BOUND_EVENTS = ("bridge_started", "supervisor_started")
_LEFT_GROUP_EVENTS = ("partitions_revoked", "partitions_lost")
# What the bridge logs when the shutdown deadline cut a step short.
_CUT_SHORT_EVENTS = (
    "workers_abandoned_records",
    "dead_letters_unacknowledged",
    "consumer_close_timed_out",
)
# How librdkafka's log and error callback name a consumer that stopped
# polling for longer than max.poll.interval.ms.
_MAX_POLL_EXCEEDED = ("maximum poll interval", "max_poll_exceeded")


def in_flight_window(pipeline: Mapping[str, Any]) -> int:
    """Records one bridge may hold consumed and uncommitted: a full queue,
    one record at each worker and the rest of a batch held back while the
    partitions are paused."""
    return int(
        pipeline["queue_capacity"]
        + pipeline["workers"]
        + pipeline["batch_size"]
    )


@dataclass
class ScenarioResult:
    """The figures of one scenario run and the promises that broke."""

    name: str
    records: int
    kills: int
    duplicate_bound: int
    seconds: float
    verdict: Verdict | None = None
    exit_seconds: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def max_exit_seconds(self) -> float | None:
        return max(self.exit_seconds) if self.exit_seconds else None

    @property
    def passed(self) -> bool:
        return not self.problems

    def assert_passed(self) -> None:
        """Fail with every broken promise and its evidence."""
        assert self.passed, "\n".join([f"{self.name}:", *self.problems])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a JSON report."""
        verdict = self.verdict
        return {
            "scenario": self.name,
            "records": self.records,
            "kills": self.kills,
            "missing": verdict.missing_count if verdict else 0,
            "duplicates": verdict.duplicate_count if verdict else 0,
            "duplicate_bound": self.duplicate_bound,
            "max_exit_seconds": self.max_exit_seconds,
            "seconds": round(self.seconds, 1),
            "figures": self.figures,
            "problems": self.problems,
            "passed": self.passed,
        }


class BridgeProcess:
    """One `kafka-bridge run` process, with its JSON log and its metrics.

    With `--processes` among `options` it is the supervisor, and the log
    holds its bridge processes' events too.
    """

    def __init__(
        self, config: Path, log_path: Path, options: Sequence[str] = ()
    ) -> None:
        self.log_path = log_path
        self._events: list[dict[str, Any]] = []
        self._read_bytes = 0
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "kafka_bridge.cli", "run",
                 "--config", str(config), *options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Out of the terminal's process group: a Ctrl-C meant for
                # the harness does not stop the bridge behind its back.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_code(self) -> int | None:
        return self._process.poll()

    def running(self) -> bool:
        return self._process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """The log's JSON events so far, in order."""
        with self.log_path.open("rb") as log:
            log.seek(self._read_bytes)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read_bytes += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self._events.append(event)
        return list(self._events)

    def has_logged(self, name: str) -> bool:
        return any(event.get("event") == name for event in self.events())

    def wait_for_event(self, name: str, timeout_seconds: float) -> bool:
        """Wait until the log has the event; False if the time ran out or
        the process ended first."""
        return _wait_for(
            lambda: self.has_logged(name),
            timeout_seconds,
            give_up=lambda: not self.running(),
        )

    @property
    def metrics_url(self) -> str | None:
        """Where its metrics server listens, once it has said so."""
        port = next(
            (
                event.get("metrics_port")
                for event in self.events()
                if event.get("event") in _METRICS_BOUND_EVENTS
            ),
            None,
        )
        return f"http://127.0.0.1:{port}" if isinstance(port, int) else None

    def metrics(self) -> dict[str, float]:
        """Its /metrics, each sample name summed over its labels."""
        url = self.metrics_url
        if url is None:
            return {}
        response = requests.get(
            f"{url}/metrics", timeout=_METRICS_TIMEOUT_SECONDS
        )
        totals: defaultdict[str, float] = defaultdict(float)
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                totals[sample.name] += sample.value
        return dict(totals)

    def children(self) -> list[int]:
        """The PIDs of its child processes (a supervisor's bridges)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def rss_bytes(self) -> int | None:
        """Resident memory, from /proc; None where there is none."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def terminate(self, patience_seconds: float) -> float | None:
        """SIGTERM; the seconds until it exited, or None if it had not
        exited after `patience_seconds` and was killed."""
        started = time.monotonic()
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=patience_seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, as a crash would; reaps the process."""
        if self.running():
            self._process.kill()
        self._process.wait()

    def log_tail(self) -> str:
        text = self.log_path.read_text("utf-8", "replace")
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])


class Fleet:
    """The bridge processes of one scenario, each with a log of its own.

    Whatever still runs when the fleet closes is killed by its PID, so a
    failing scenario leaves no process behind.
    """

    def __init__(self, config: Path, work_dir: Path) -> None:
        self._config = config
        self._work_dir = work_dir
        self.members: list[BridgeProcess] = []

    def start(self, options: Sequence[str] = ()) -> BridgeProcess:
        index = len(self.members)
        bridge = BridgeProcess(
            self._config, self._work_dir / f"bridge-{index}.log", options
        )
        self.members.append(bridge)
        return bridge

    def close(self) -> None:
        for bridge in self.members:
            bridge.kill()

    def logs(self) -> str:
        return "".join(
            bridge.log_path.read_text("utf-8", "replace")
            for bridge in self.members
        )

    def logged_anywhere(self, *needles: str) -> list[str]:
        """Log lines of any member that contain one of the needles."""
        return [
            line
            for line in self.logs().splitlines()
            if any(needle in line for needle in needles)
        ]


class SteadyLoad:
    """A thread producing at a steady rate until stopped."""

    def __init__(
        self, producer: LedgerProducer, rate_per_second: float
    ) -> None:
        self._producer = producer
        self._rate = rate_per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="steady-load", daemon=True
        )
        self.failure: Exception | None = None

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop producing and wait for the broker's acknowledgements."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(_PRODUCE_FLUSH_SECONDS)
        self._producer.flush(_PRODUCE_FLUSH_SECONDS)

    def _run(self) -> None:
        started = time.monotonic()
        produced = 0
        try:
            while not self._stop.wait(_LOAD_TICK_SECONDS):
                elapsed = time.monotonic() - started
                if elapsed > _LOAD_MAX_SECONDS:
                    return
                due = int(elapsed * self._rate) - produced
                self._producer.produce(due, poison_every=POISON_EVERY)
                produced += due
        except Exception as error:
            # The scenario reads it once the load has stopped.
            self.failure = error


class _Stage:
    """What a scenario runs on: its topics, its API, its producer and its
    bridges, and the problems found along the way."""

    def __init__(
        self,
        bootstrap: str,
        work_dir: Path,
        name: str,
        api: LocalApi,
        topic: str,
        dlq_topic: str,
        padding_bytes: int,
    ) -> None:
        self.bootstrap = bootstrap
        self.work_dir = work_dir
        self.name = name
        self.api = api
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group_id = f"chaos-{uuid.uuid4().hex[:8]}"
        self.producer = LedgerProducer(
            bootstrap, topic, padding_bytes=padding_bytes
        )
        self.problems: list[str] = []
        self.exit_seconds: list[float] = []
        self.cut_short = 0
        self.pipeline: dict[str, Any] = dict(BASE_PIPELINE)
        self.fleet: Fleet | None = None
        self._started = time.monotonic()

    def configure(
        self,
        pipeline: Mapping[str, Any] | None = None,
        consumer: Mapping[str, Any] | None = None,
    ) -> Fleet:
        """Write the bridges' configuration; the fleet that runs it."""
        self.pipeline.update(pipeline or {})
        config = bridge_config(
            self.bootstrap,
            self.topic,
            self.group_id,
            self.api.url,
            dlq_topic=self.dlq_topic,
            pipeline=self.pipeline,
            consumer=consumer,
        )
        path = self.work_dir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.fleet = Fleet(path, self.work_dir)
        return self.fleet

    @property
    def deadline_seconds(self) -> float:
        return float(self.pipeline["shutdown_deadline_seconds"])

    def produce_all(self, records: int) -> None:
        self.producer.produce(records, poison_every=POISON_EVERY)
        self.producer.flush(_PRODUCE_FLUSH_SECONDS)

    def random_progress(self, rng: random.Random, low: int, high: int) -> int:
        """A request count a little ahead of now: a random moment."""
        return self.api.received_count() + rng.randint(low, max(low, high))

    def wait_for_requests(self, count: int, bridge: BridgeProcess) -> bool:
        reached = _wait_for(
            lambda: self.api.received_count() >= count,
            WAIT_SECONDS,
            give_up=lambda: not bridge.running(),
        )
        if not reached:
            self.problem(
                f"the API did not reach {count} requests "
                f"(at {self.api.received_count()})",
                bridge,
            )
        return reached

    def stop(
        self, bridge: BridgeProcess, *, may_be_cut_short: bool = False
    ) -> None:
        """SIGTERM the bridge; note its exit time and any broken promise.

        Exit code 1 with a log that says the deadline cut a step short is
        the documented outcome of a stop that ran out of time; it is
        allowed where `may_be_cut_short`, and counted. Any other exit but
        0 is a broken promise.
        """
        bound = self.deadline_seconds + EXIT_MARGIN_SECONDS
        seconds = bridge.terminate(patience_seconds=bound + WAIT_SECONDS)
        if seconds is None:
            self.problem(
                f"no exit {bound + WAIT_SECONDS:.0f} s after SIGTERM", bridge
            )
            return
        self.exit_seconds.append(round(seconds, 2))
        if seconds > bound:
            self.problem(
                f"exited {seconds:.1f} s after SIGTERM, over the "
                f"{bound:.0f} s bound",
                bridge,
            )

        cut_short = bridge.exit_code == 1 and any(
            bridge.has_logged(event) for event in _CUT_SHORT_EVENTS
        )
        if cut_short and may_be_cut_short:
            self.cut_short += 1
        elif bridge.exit_code != 0:
            self.problem(f"exit code {bridge.exit_code} after SIGTERM", bridge)

    def problem(self, text: str, bridge: BridgeProcess | None = None) -> None:
        if bridge is not None:
            text += (
                f" (pid {bridge.pid}, log {bridge.log_path}):\n"
                f"{bridge.log_tail()}"
            )
        self.problems.append(text)

    def verdict(self, settle_seconds: float = SETTLE_SECONDS) -> Verdict:
        """Drain, then account for every record (bridges still running)."""
        settlement = settle(
            self.bootstrap, self.group_id, self.topic, settle_seconds
        )
        letters = dead_letter_coordinates(
            self.bootstrap, self.dlq_topic, self.topic, _DLQ_READ_SECONDS
        )
        logs = self.fleet.logs() if self.fleet else ""
        return judge(
            self.producer.entries,
            receipts_of(self.api),
            letters,
            dropped_coordinates(logs, self.topic),
            settlement,
        )

    def result(
        self,
        verdict: Verdict,
        *,
        kills: int,
        duplicate_bound: int,
        figures: Mapping[str, float] | None = None,
    ) -> ScenarioResult:
        shown = dict(figures or {})
        if self.cut_short:
            shown["stops_cut_short"] = self.cut_short
        return ScenarioResult(
            name=self.name,
            records=verdict.produced,
            kills=kills,
            duplicate_bound=duplicate_bound,
            seconds=time.monotonic() - self._started,
            verdict=verdict,
            exit_seconds=self.exit_seconds,
            figures=shown,
            problems=[*self.problems, *verdict.problems(duplicate_bound)],
        )


@contextlib.contextmanager
def _stage(
    bootstrap: str,
    work_dir: Path,
    name: str,
    *,
    partitions: int,
    padding_bytes: int = 0,
) -> Iterator[_Stage]:
    """Topics, an API and a producer for one scenario; torn down after."""
    work_dir.mkdir(parents=True, exist_ok=True)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = unique_topic_name(f"chaos-{name}")
    dlq_topic = f"{topic}-dlq"
    create_topic(admin, topic, partitions)
    create_topic(admin, dlq_topic, 1)
    try:
        with LocalApi() as api:
            stage = _Stage(
                bootstrap, work_dir, name, api, topic, dlq_topic,
                padding_bytes,
            )
            try:
                yield stage
            finally:
                if stage.fleet is not None:
                    stage.fleet.close()
    finally:
        _delete_topics(admin, [topic, dlq_topic])


def bridge_config(
    bootstrap: str,
    topic: str,
    group_id: str,
    api_url: str,
    *,
    dlq_topic: str | None,
    pipeline: Mapping[str, Any],
    consumer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration of a bridge under test, as plain data."""
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "topics": [topic],
            "consumer": {
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 500,
                **(consumer or {}),
            },
        },
        "api": {
            "primary_url": api_url,
            "retry": {
                "initial_backoff_seconds": 0.05,
                "max_backoff_seconds": 0.5,
            },
        },
        "dlq": {"topic": dlq_topic},
        "pipeline": dict(pipeline),
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "logging": {"level": "INFO", "format": "json"},
    }


# -- the scenarios -----------------------------------------------------------


def sigkill_restarts(
    bootstrap: str,
    work_dir: Path,
    *,
    records: int = 600,
    kills: int = 2,
    seed: int = 1,
) -> ScenarioResult:
    """SIGKILL at random moments, restarting each time: nothing missing,
    at most one in-flight window of duplicates per kill."""
    rng = random.Random(seed)
    with _stage(bootstrap, work_dir, "sigkill", partitions=4) as stage:
        stage.api.respond_with(200, delay_seconds=IN_FLIGHT_DELAY_SECONDS)
        stage.produce_all(records)
        fleet = stage.configure()
        share = records // (2 * (kills + 1))

        for _ in range(kills):
            bridge = fleet.start()
            target = stage.random_progress(rng, max(1, share // 4), share)
            stage.wait_for_requests(target, bridge)
            bridge.kill()

        final = fleet.start()
        verdict = stage.verdict()
        stage.stop(final)
        bound = kills * in_flight_window(stage.pipeline)
        return stage.result(verdict, kills=kills, duplicate_bound=bound)


def sigkill_process_restarts(
    bootstrap: str,
    work_dir: Path,
    *,
    rate_per_second: float = 200.0,
    kills: int = 2,
    processes: int = 2,
    seed: int = 3,
) -> ScenarioResult:
    """Under `--processes`, SIGKILL one bridge process at random moments
    under steady load: the supervisor starts it again, nothing is missing,
    and duplicates stay within one in-flight window per kill.

    The next kill waits until the successor holds partitions: the group
    takes a killed member's partitions away only after its session timeout,
    and kills faster than that keep the group rebalancing, when no member
    can commit (a case for group churn, not for a crash now and then).
    """
    rng = random.Random(seed)
    pause = threading.Event()
    with _stage(bootstrap, work_dir, "sigkill-process", partitions=4) as stage:
        stage.api.respond_with(200, delay_seconds=IN_FLIGHT_DELAY_SECONDS)
        fleet = stage.configure()

        with SteadyLoad(stage.producer, rate_per_second) as load:
            supervisor = fleet.start(_supervised(processes))
            if not _wait_for_assignments(supervisor, processes):
                stage.problem("never assigned", supervisor)
            for kill in range(kills):
                pause.wait(rng.uniform(0.5, 2.5))
                _kill_one_process(stage, supervisor, rng, processes + kill)
        if load.failure is not None:
            stage.problem(f"producing failed: {load.failure!r}")

        verdict = stage.verdict()
        restarts = supervisor.metrics().get(
            "kafka_bridge_process_restarts_total", 0.0
        )
        if restarts != kills:
            stage.problem(f"{restarts:.0f} restarts after {kills} kills")
        stage.stop(supervisor)
        bound = kills * in_flight_window(stage.pipeline)
        return stage.result(
            verdict, kills=kills, duplicate_bound=bound,
            figures={"restarts": restarts},
        )


def _supervised(processes: int) -> list[str]:
    """Options for a supervisor that restarts a killed process soon."""
    return ["--processes", str(processes), "--restart-backoff", "0.2"]


def _kill_one_process(
    stage: _Stage,
    supervisor: BridgeProcess,
    rng: random.Random,
    started_before: int,
) -> None:
    """SIGKILL one of the supervisor's bridges; wait until its successor
    holds partitions, so that each kill meets a settled group."""
    children = supervisor.children()
    if not children:
        stage.problem("the supervisor had no bridge processes", supervisor)
        return
    os.kill(rng.choice(children), signal.SIGKILL)

    def successor() -> int | None:
        started = [
            event["pid"] for event in supervisor.events()
            if event.get("event") == "process_started"
        ]
        return started[-1] if len(started) > started_before else None

    def successor_assigned() -> bool:
        pid = successor()
        return pid is not None and any(
            event.get("event") == "partitions_assigned"
            and event.get("pid") == pid
            and event.get("partitions")
            for event in supervisor.events()
        )

    settled = _wait_for(
        successor_assigned, WAIT_SECONDS,
        give_up=lambda: not supervisor.running(),
    )
    if not settled:
        stage.problem(
            "the killed process was not started again, or its successor "
            "got no partitions",
            supervisor,
        )


def sigterm_under_load(
    bootstrap: str,
    work_dir: Path,
    *,
    rate_per_second: float = 200.0,
    stops: int = 3,
    ordering: str = "key",
    processes: int = 1,
    seed: int = 2,
) -> ScenarioResult:
    """SIGTERM at random moments while records keep coming: nothing
    missing, every exit within the shutdown deadline, and no duplicates.

    With `key` or `none`, a partition's records are spread over several
    lanes, so a stop that left some queued would commit below them while
    later ones were delivered; the bridge works off its queue before it
    stops, and no ordering is allowed a duplicate. With `processes` above
    1, the signal goes to the supervisor, which passes it on.
    """
    rng = random.Random(seed)
    pause = threading.Event()
    name = f"sigterm-{ordering}"
    options: list[str] = []
    if processes > 1:
        name += f"-x{processes}"
        options = _supervised(processes)
    with _stage(bootstrap, work_dir, name, partitions=8) as stage:
        stage.api.respond_with(200, delay_seconds=IN_FLIGHT_DELAY_SECONDS)
        fleet = stage.configure(pipeline={"ordering": ordering})

        with SteadyLoad(stage.producer, rate_per_second) as load:
            for _ in range(stops):
                bridge = fleet.start(options)
                if _wait_for_assignments(bridge, processes):
                    pause.wait(rng.uniform(0.5, 2.5))
                else:
                    stage.problem("never assigned", bridge)
                stage.stop(bridge)
        if load.failure is not None:
            stage.problem(f"producing failed: {load.failure!r}")

        final = fleet.start(options)
        # Its stop, too, must come after the processes' own rebalance.
        if not _wait_for_assignments(final, processes):
            stage.problem("never assigned", final)
        verdict = stage.verdict()
        stage.stop(final)
        return stage.result(verdict, kills=stops, duplicate_bound=0)


def _wait_for_assignments(bridge: BridgeProcess, members: int) -> bool:
    """Wait until `members` bridges of the process have partitions: the
    processes of one supervisor have finished rebalancing among
    themselves. A stop before that is another case (docs/processes.md)."""

    def assigned() -> bool:
        given = [
            event for event in bridge.events()
            if event.get("event") == "partitions_assigned"
            and event.get("partitions")
        ]
        return len(given) >= members

    return _wait_for(
        assigned, WAIT_SECONDS, give_up=lambda: not bridge.running()
    )


def sigterm_with_broker_down(
    broker: LocalKafka,
    work_dir: Path,
    *,
    records: int = 400,
    seed: int = 3,
) -> ScenarioResult:
    """SIGTERM while the broker is unreachable: the bridge exits within
    its deadline instead of hanging; after the broker is back, a new
    bridge delivers what the first one could not commit.

    Duplicates: one in-flight window, plus whatever the bridge delivered
    while the broker was going away, which it could no longer commit.
    """
    rng = random.Random(seed)
    bootstrap = broker.bootstrap_servers
    with _stage(bootstrap, work_dir, "broker-down", partitions=2) as stage:
        stage.api.respond_with(200, delay_seconds=2 * IN_FLIGHT_DELAY_SECONDS)
        stage.produce_all(records)
        fleet = stage.configure()

        bridge = fleet.start()
        target = stage.random_progress(rng, records // 10, records // 3)
        stage.wait_for_requests(target, bridge)
        before = stage.api.received_count()
        # Stopped cleanly, the broker comes back in seconds; after a crash
        # it first recovers its logs. Either way it answers nothing now.
        broker.halt()
        try:
            # The last commit and the consumer's close wait for the broker
            # until the deadline cuts them short: exit code 1.
            stage.stop(bridge, may_be_cut_short=True)
        finally:
            broker.resume()
        uncommittable = stage.api.received_count() - before

        final = fleet.start()
        verdict = stage.verdict()
        stage.stop(final)
        bound = in_flight_window(stage.pipeline) + uncommittable
        figures = {"delivered_while_down": uncommittable}
        return stage.result(
            verdict, kills=1, duplicate_bound=bound, figures=figures
        )


def broker_outage(
    broker: LocalKafka,
    work_dir: Path,
    *,
    rate_per_second: float = 100.0,
    outage_seconds: float = 8.0,
    seed: int = 4,
) -> ScenarioResult:
    """The broker stopped and started again under steady load: the bridge
    waits without exiting, resumes, and nothing is missing.

    Duplicates: one in-flight window, plus what the bridge delivered from
    its client's prefetched records while the broker was away: it could
    not commit those, and a member whose session lapsed meanwhile starts
    again from the last commit.
    """
    rng = random.Random(seed)
    pause = threading.Event()
    bootstrap = broker.bootstrap_servers
    with _stage(bootstrap, work_dir, "outage", partitions=2) as stage:
        stage.api.respond_with(200, delay_seconds=IN_FLIGHT_DELAY_SECONDS)
        fleet = stage.configure()

        with SteadyLoad(stage.producer, rate_per_second) as load:
            bridge = fleet.start()
            target = stage.random_progress(rng, 50, 150)
            stage.wait_for_requests(target, bridge)
            before = stage.api.received_count()
            broker.halt()
            try:
                pause.wait(outage_seconds)
                if not bridge.running():
                    stage.problem("exited during the outage", bridge)
            finally:
                broker.resume()
            back = stage.api.received_count()
            if not stage.wait_for_requests(back + 50, bridge):
                stage.problem("no deliveries after the broker came back")
        if load.failure is not None:
            stage.problem(f"producing failed: {load.failure!r}")

        verdict = stage.verdict()
        stage.stop(bridge)
        bound = in_flight_window(stage.pipeline) + back - before
        figures = {
            "outage_seconds": outage_seconds,
            "delivered_while_down": back - before,
        }
        return stage.result(
            verdict, kills=1, duplicate_bound=bound, figures=figures
        )


# librdkafka's prefetch in the slow-API scenario: it fills while the queue
# is full and before the partitions are paused, so it counts in the bound.
_SLOW_API_PREFETCH_KIB = 2048


def slow_api(
    bootstrap: str,
    work_dir: Path,
    *,
    records: int = 400,
    padding_bytes: int = 128 * 1024,
    slow_seconds: float = 10.0,
    delay_seconds: float = 1.5,
) -> ScenarioResult:
    """An API that takes `delay_seconds` per request for longer than
    `max.poll.interval.ms`, with a small queue: the poll thread keeps
    polling (partitions paused, never evicted, no rebalance), memory stays
    bounded though the backlog is large, and the lag recovers after."""
    pause = threading.Event()
    with _stage(
        bootstrap, work_dir, "slow-api", partitions=2,
        padding_bytes=padding_bytes,
    ) as stage:
        stage.produce_all(records)
        stage.api.respond_with(200, delay_seconds=delay_seconds)
        # The shortest the broker allows above the session timeout: a poll
        # thread that stopped polling would be evicted well within the run.
        fleet = stage.configure(
            pipeline={"queue_capacity": 20, "batch_size": 10},
            consumer={
                "max.poll.interval.ms": SESSION_TIMEOUT_MS + 1000,
                "queued.max.messages.kbytes": _SLOW_API_PREFETCH_KIB,
            },
        )

        bridge = fleet.start()
        if not bridge.wait_for_event("bridge_started", WAIT_SECONDS):
            stage.problem("never started", bridge)
        baseline = bridge.rss_bytes() or 0
        if not bridge.wait_for_event("partitions_paused", WAIT_SECONDS):
            stage.problem("the partitions were never paused", bridge)
        peak = _peak_rss(bridge, slow_seconds, pause)
        slow_events = bridge.events()

        stage.api.reset_behaviour()
        verdict = stage.verdict()
        after = bridge.metrics()
        stage.stop(bridge)

        growth_mib = (peak - baseline) / _MIB
        window_bytes = in_flight_window(stage.pipeline) * padding_bytes
        # librdkafka's prefetch may pass its bound by one fetch response
        # (up to 1 MiB a partition) before it stops fetching.
        prefetch_mib = _SLOW_API_PREFETCH_KIB / 1024 + 2
        bound_mib = window_bytes / _MIB + prefetch_mib + RSS_ALLOWANCE_MIB
        figures: dict[str, float] = {
            "backlog_mib": round(records * padding_bytes / _MIB, 1),
            "rss_growth_mib": round(growth_mib, 1),
            "rss_growth_bound_mib": round(bound_mib, 1),
            "pauses": int(after.get("kafka_bridge_partition_pauses_total", 0)),
            "rebalances": int(after.get("kafka_bridge_rebalances_total", 0)),
        }
        _check_slow_api(stage, figures, slow_events)
        return stage.result(
            verdict, kills=0, duplicate_bound=0, figures=figures
        )


def group_churn(
    bootstrap: str,
    work_dir: Path,
    *,
    rate_per_second: float = 150.0,
    instances: int = 3,
    cycles: int = 3,
    ordering: str = "partition",
    seed: int = 5,
) -> ScenarioResult:
    """Several bridges in one group, stopped and started again at random
    under steady load: nothing missing, and duplicates at most one record
    in ten, in any ordering.

    A stop that comes during a rebalance may spend its deadline waiting
    for the group and leave records unfinished; those are the duplicates
    allowed.
    """
    rng = random.Random(seed)
    pause = threading.Event()
    name = f"churn-{ordering}"
    with _stage(bootstrap, work_dir, name, partitions=6) as stage:
        stage.api.respond_with(200, delay_seconds=IN_FLIGHT_DELAY_SECONDS)
        fleet = stage.configure(pipeline={"ordering": ordering})

        with SteadyLoad(stage.producer, rate_per_second) as load:
            members = [fleet.start() for _ in range(instances)]
            for member in members:
                if not member.wait_for_event("bridge_started", WAIT_SECONDS):
                    stage.problem("never started", member)
            for _ in range(cycles):
                pause.wait(rng.uniform(1.0, 3.0))
                index = rng.randrange(instances)
                # A stop during a rebalance may spend the deadline on
                # closing the consumer, which waits for the rebalance.
                stage.stop(members[index], may_be_cut_short=True)
                members[index] = fleet.start()
                members[index].wait_for_event("bridge_started", WAIT_SECONDS)
        if load.failure is not None:
            stage.problem(f"producing failed: {load.failure!r}")

        verdict = stage.verdict()
        for member in members:
            stage.stop(member, may_be_cut_short=True)
        bound = verdict.produced // 10
        share = 100 * verdict.duplicate_count / max(1, verdict.produced)
        figures = {"instances": instances, "duplicate_percent": round(share, 1)}
        return stage.result(
            verdict, kills=cycles, duplicate_bound=bound, figures=figures
        )


def _peak_rss(
    bridge: BridgeProcess, seconds: float, pause: threading.Event
) -> int:
    peak = 0
    for _ in range(max(1, int(seconds / _RSS_SAMPLE_SECONDS))):
        peak = max(peak, bridge.rss_bytes() or 0)
        pause.wait(_RSS_SAMPLE_SECONDS)
    return peak


def _check_slow_api(
    stage: _Stage,
    figures: Mapping[str, float],
    slow_events: Sequence[Mapping[str, Any]],
) -> None:
    if figures["pauses"] == 0:
        stage.problem("no partition pause was counted")
    if figures["rebalances"] != 0:
        stage.problem(f"{figures['rebalances']} rebalances before the stop")
    left = [
        event
        for event in slow_events
        if event.get("event") in _LEFT_GROUP_EVENTS
        or any(text in str(event).lower() for text in _MAX_POLL_EXCEEDED)
    ]
    if left:
        stage.problem(f"the consumer left its group while slow: {left[:3]}")

    bound = figures["rss_growth_bound_mib"]
    if figures["backlog_mib"] < 2 * bound:
        stage.problem(
            f"a backlog of {figures['backlog_mib']} MiB is too small to "
            f"tell the {bound} MiB bound from no bound"
        )
    if figures["rss_growth_mib"] > bound:
        stage.problem(
            f"memory grew by {figures['rss_growth_mib']} MiB, over the "
            f"{bound} MiB bound"
        )


# -- broken configurations ---------------------------------------------------


@dataclass(frozen=True)
class BrokenConfig:
    """A configuration `kafka-bridge run` must refuse with exit code 2.

    In the text, `{secret}` names a file holding `secret`, in which
    `{canary}` stands for a string that must appear in no output, and
    `{busy_port}` is a loopback port something else listens on.
    """

    name: str
    text: str
    secret: str | None = None


_VALID = """\
kafka:
  bootstrap_servers: 127.0.0.1:9
  topics: [orders]
api:
  primary_url: http://127.0.0.1:9/ingest
metrics:
  enabled: false
"""


def _with_consumer(settings: str) -> str:
    return _VALID.replace(
        "  topics: [orders]\n", f"  topics: [orders]\n  consumer: {settings}\n"
    )


def _with_metrics(settings: str) -> str:
    return _VALID.replace("  enabled: false\n", settings)


BROKEN_CONFIGS = (
    BrokenConfig("not YAML", "kafka: [orders\n"),
    BrokenConfig("misspelt key", _VALID.replace("primary_url", "primry_url")),
    BrokenConfig("negative workers", _VALID + "pipeline: {workers: -4}\n"),
    BrokenConfig(
        "secret file holding a bad number",
        _VALID + "pipeline: {workers: 'file://{secret}'}\n",
        secret="{canary}\n",
    ),
    BrokenConfig(
        "secret file holding a header with a line break",
        _VALID.replace(
            "api:\n", "api:\n  headers: {X-Token: 'file://{secret}'}\n"
        ),
        secret="{canary}\nsecond line\n",
    ),
    BrokenConfig(
        "secret file that does not exist",
        _VALID.replace(
            "api:\n", "api:\n  headers: {X-Token: 'file:///nonexistent/t'}\n"
        ),
    ),
    BrokenConfig(
        "offset commits handed to librdkafka",
        _with_consumer("{enable.auto.commit: true}"),
    ),
    BrokenConfig(
        "secret file holding a security protocol librdkafka refuses",
        _with_consumer("{security.protocol: 'file://{secret}'}"),
        secret="{canary}\n",
    ),
    BrokenConfig(
        "unknown librdkafka property", _with_consumer("{no.such.property: 1}")
    ),
    BrokenConfig(
        "transform that cannot be imported",
        _VALID + "pipeline: {transform: 'no_such_module:build'}\n",
    ),
)

# Only binding the metrics server tells these from good addresses.
UNBINDABLE_METRICS_CONFIGS = (
    BrokenConfig(
        "metrics host that does not resolve",
        _with_metrics("  host: no-such-host.invalid\n  port: 0\n"),
    ),
    BrokenConfig(
        "metrics port in use",
        _with_metrics("  host: 127.0.0.1\n  port: {busy_port}\n"),
    ),
)


def bad_configurations(
    work_dir: Path,
    cases: Sequence[BrokenConfig] = BROKEN_CONFIGS,
    *,
    name: str = "bad-config",
) -> ScenarioResult:
    """`kafka-bridge run` on each broken configuration: exit code 2, no
    traceback, and no secret in its output."""
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    canary = f"canary-{uuid.uuid4().hex[:12]}"
    problems: list[str] = []
    codes: dict[str, float] = {}

    with socket.create_server(("127.0.0.1", 0)) as busy:
        busy_port = busy.getsockname()[1]
        for index, case in enumerate(cases):
            config = _write_broken(work_dir, index, case, canary, busy_port)
            code, output = _run_cli(config)
            # -1: it had not exited when its time was up and was killed.
            codes[case.name] = -1 if code is None else code
            problems += _cli_problems(case.name, code, output, canary)

    return ScenarioResult(
        name=name,
        records=0,
        kills=0,
        duplicate_bound=0,
        seconds=time.monotonic() - started,
        figures=codes,
        problems=problems,
    )


def _cli_problems(
    case: str, code: int | None, output: str, canary: str
) -> list[str]:
    problems = []
    if code != 2:
        problems.append(f"{case}: exit code {code}, not 2")
    if "Traceback" in output:
        problems.append(f"{case}: a traceback:\n{output[-1500:]}")
    if canary in output:
        leaked = [line for line in output.splitlines() if canary in line]
        problems.append(f"{case}: the secret is shown: {leaked[:2]}")
    return problems


def _write_broken(
    work_dir: Path, index: int, case: BrokenConfig, canary: str, port: int
) -> Path:
    secret_path = work_dir / f"secret-{index}"
    if case.secret is not None:
        secret_path.write_text(case.secret.replace("{canary}", canary))
    text = case.text.replace("{secret}", str(secret_path))
    config = work_dir / f"broken-{index}.yaml"
    config.write_text(text.replace("{busy_port}", str(port)))
    return config


def _run_cli(config: Path) -> tuple[int | None, str]:
    """Run `kafka-bridge run` to its end; its exit code and output. One
    that does not end (a configuration taken for valid) is killed."""
    script = Path(sys.executable).parent / "kafka-bridge"
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", "kafka_bridge.cli"]
    )
    process = subprocess.Popen(
        [*command, "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=_CLI_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return None, out + err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out + err


# -- small parts -------------------------------------------------------------


def _wait_for(
    condition: Callable[[], bool],
    timeout_seconds: float,
    *,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Check `condition` until it holds, `give_up` holds or time is up."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if give_up():
            return condition()
        pause.wait(_LOG_CHECK_SECONDS)
    return condition()


def _delete_topics(admin: AdminClient, topics: list[str]) -> None:
    """Best effort: the names are unique, so a topic left behind on a
    shared broker disturbs no later run."""
    futures = admin.delete_topics(
        topics, request_timeout=_TOPIC_DELETE_TIMEOUT_SECONDS
    )
    for future in futures.values():
        with contextlib.suppress(KafkaException, TimeoutError):
            future.result(timeout=_TOPIC_DELETE_TIMEOUT_SECONDS)
