"""One bridge process per core, in one consumer group, under one supervisor.

A Python process runs its threads about one core's worth at a time, so one
bridge cannot use a second core. `kafka-bridge run --processes N` starts N
bridge processes instead, each a member of the configured consumer group:
Kafka shares the partitions among them as it would among replicas, and
every guarantee of one bridge holds for each. The supervisor stays in front
of them, so that a service manager still sees one daemon:

- SIGTERM or SIGINT goes on to every process, which stops as one bridge
  does; a process still running after the shutdown deadline is killed;
- a process that exits unasked is restarted after a backoff that doubles
  with each crash in a row; when one keeps crashing, the supervisor stops
  the others and exits 1; a process refusing the configuration (exit 2)
  stops everything with exit code 2, since a restart cannot fix it;
- the processes' metrics are served as one on the configured metrics port
  (prometheus-client's multiprocess mode), and `/readyz` and `/healthz`
  pass only when every process passes its own check.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    multiprocess,
)

from kafka_bridge import metrics
from kafka_bridge.config import Settings
from kafka_bridge.errors import ConfigError
from kafka_bridge.usable_cpus import usable_cpus
from kafka_bridge.version import __version__

log = structlog.get_logger(__name__)

# Set in a child's environment: the supervisor's PID, so that a child whose
# supervisor died stops instead of running on unwatched.
SUPERVISOR_PID_ENV = "KAFKA_BRIDGE_SUPERVISOR_PID"
PROCESS_INDEX_ENV = "KAFKA_BRIDGE_PROCESS_INDEX"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# A child still running this long after its own shutdown deadline is
# killed: its stop has hung, and the service manager is waiting.
_STOP_GRACE_SECONDS = 5.0
_CHECK_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed process is started again, and when to give up.

    A process that ran `stable_after_seconds` before it crashed starts a
    new count; otherwise the crash adds to the count of crashes in a row,
    the backoff doubles with it, and past `max_restarts` the supervisor
    gives up.
    """

    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    max_restarts: int = 5
    stable_after_seconds: float = 60.0

    def backoff_seconds(self, crashes_in_a_row: int) -> float:
        """The wait before the restart that follows this many crashes."""
        doubled = self.initial_backoff_seconds * 2 ** (crashes_in_a_row - 1)
        return float(min(self.max_backoff_seconds, doubled))

    def gives_up(self, crashes_in_a_row: int) -> bool:
        return crashes_in_a_row > self.max_restarts


@dataclass
class _Child:
    """One slot of the N: the process in it now and its crash count."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """N bridge processes of one configuration, watched until stopped."""

    def __init__(
        self,
        settings: Settings,
        config_path: str,
        processes: int,
        *,
        policy: RestartPolicy | None = None,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self._config_path = str(Path(config_path).resolve())
        self._policy = policy or RestartPolicy()
        self._python = python
        self._children = [_Child(index) for index in range(processes)]
        self._stop_requested = threading.Event()
        self._signals_received = 0
        self._outcome = EXIT_OK
        self._metrics_dir = tempfile.mkdtemp(prefix="kafka-bridge-metrics-")
        self._registry = CollectorRegistry()
        self._restarts = self._own_metrics()
        self._metrics_server = self._bind_metrics()

    def _own_metrics(self) -> Counter:
        """The supervisor's own series beside the bridges'; the restart
        counter, which it updates."""
        _collect_files(self._registry, self._metrics_dir)
        build = Info(
            "kafka_bridge_build",
            "Version of the running bridge.",
            registry=self._registry,
        )
        build.info({"version": __version__})
        restarts = Counter(
            "kafka_bridge_process_restarts",
            "Bridge processes restarted by the supervisor after a crash.",
            registry=self._registry,
        )
        running = Gauge(
            "kafka_bridge_processes",
            "Bridge processes running under the supervisor.",
            registry=self._registry,
        )
        running.set_function(
            lambda: sum(child.running() for child in self._children)
        )
        return restarts

    def _bind_metrics(self) -> metrics.MetricsServer | None:
        try:
            return metrics.bind_server(
                self.settings.metrics,
                healthy=self.health,
                ready=self.readiness,
                registry=self._registry,
            )
        except ConfigError:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            raise

    @property
    def metrics_port(self) -> int | None:
        server = self._metrics_server
        return server.port if server is not None else None

    def pids(self) -> list[int]:
        """The PIDs of the bridge processes running now."""
        return [
            child.pid
            for child in self._children
            if child.pid is not None and child.running()
        ]

    def request_stop(self) -> None:
        """Stop the processes and return from `run`; safe in a signal
        handler. A second request makes the processes exit at once."""
        self._signals_received += 1
        if self._signals_received > 1:
            self._signal_all(signal.SIGTERM)
        self._stop_requested.set()

    def run(self) -> int:
        """Start the processes, watch them until asked to stop or until
        they cannot be kept running; the exit code for the supervisor."""
        try:
            self._start()
            while not self._stop_requested.wait(_CHECK_INTERVAL_SECONDS):
                self._reap()
                self._restart_due()
            return self._stop()
        finally:
            if self._metrics_server is not None:
                self._metrics_server.stop()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def health(self) -> tuple[bool, str]:
        """Alive: every process runs, and every thread of each."""
        return self._check_all(
            "kafka_bridge_process_healthy", "not running all its threads"
        )

    def readiness(self) -> tuple[bool, str]:
        """Ready: every process runs and is ready itself."""
        return self._check_all("kafka_bridge_process_ready", "not ready")

    def _start(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.start()
        for child in self._children:
            self._spawn(child)
        log.info(
            "supervisor_started",
            processes=len(self._children),
            pids=self.pids(),
            metrics_port=self.metrics_port,
        )

    def _spawn(self, child: _Child) -> None:
        environment = {
            **os.environ,
            MULTIPROC_DIR_ENV: self._metrics_dir,
            SUPERVISOR_PID_ENV: str(os.getpid()),
            PROCESS_INDEX_ENV: str(child.index),
        }
        child.process = subprocess.Popen(
            [self._python, "-m", "kafka_bridge.cli", "run",
             "--config", self._config_path],
            stdin=subprocess.DEVNULL,
            env=environment,
            # Out of the terminal's process group: a Ctrl-C reaches the
            # children once, through the supervisor, and not twice, which
            # would make them exit at once.
            process_group=0,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("process_started", process=child.index, pid=child.pid)

    def _reap(self) -> None:
        """Note every child that exited unasked; schedule its restart, or
        give up."""
        for child in self._children:
            if child.process is None or child.running():
                continue
            code = child.process.returncode
            pid = child.process.pid
            child.process = None
            _mark_dead(pid, self._metrics_dir)
            self._crashed(child, pid, code)

    def _crashed(self, child: _Child, pid: int, code: int) -> None:
        child.exit_codes.append(code)
        ran_seconds = time.monotonic() - child.started_at
        if ran_seconds >= self._policy.stable_after_seconds:
            child.crashes_in_a_row = 0
        child.crashes_in_a_row += 1

        if code == EXIT_USAGE:
            log.error(
                "process_refused_configuration", process=child.index, pid=pid
            )
            self._give_up(EXIT_USAGE)
            return
        if self._policy.gives_up(child.crashes_in_a_row):
            log.error(
                "processes_keep_crashing",
                process=child.index,
                crashes_in_a_row=child.crashes_in_a_row,
                exit_codes=child.exit_codes[-child.crashes_in_a_row:],
            )
            self._give_up(EXIT_FAILURE)
            return

        backoff = self._policy.backoff_seconds(child.crashes_in_a_row)
        child.restart_at = time.monotonic() + backoff
        log.warning(
            "process_exited",
            process=child.index,
            pid=pid,
            exit_code=code,
            ran_seconds=round(ran_seconds, 1),
            restart_in_seconds=backoff,
        )

    def _give_up(self, outcome: int) -> None:
        self._outcome = outcome
        self._stop_requested.set()

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self._children:
            due = child.restart_at is not None and child.restart_at <= now
            if due and not self._stop_requested.is_set():
                self._restarts.inc()
                self._spawn(child)

    def _stop(self) -> int:
        """SIGTERM to every process; wait out their shutdown deadline and
        a grace; kill what still runs. 0 only if every one stopped clean."""
        log.info("supervisor_stopping", pids=self.pids())
        self._signal_all(signal.SIGTERM)
        patience = (
            self.settings.pipeline.shutdown_deadline_seconds
            + _STOP_GRACE_SECONDS
        )
        clean = self._wait_all(time.monotonic() + patience)
        log.info("supervisor_stopped", clean=clean, exit_code=self._outcome)
        if self._outcome != EXIT_OK:
            return self._outcome
        return EXIT_OK if clean else EXIT_FAILURE

    def _signal_all(self, signum: int) -> None:
        for child in self._children:
            if child.process is not None and child.running():
                child.process.send_signal(signum)

    def _wait_all(self, give_up_at: float) -> bool:
        clean = True
        for child in self._children:
            if child.process is None:
                continue
            timeout = max(0.0, give_up_at - time.monotonic())
            try:
                code = child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("process_killed", process=child.index,
                            pid=child.pid)
                child.process.kill()
                code = child.process.wait()
            clean = clean and code == EXIT_OK
        return clean

    def _check_all(self, gauge: str, failing: str) -> tuple[bool, str]:
        reports = _process_reports(self._metrics_dir, gauge)
        problems = []
        for child in self._children:
            if child.pid is None or not child.running():
                problems.append(f"process {child.index} not running")
            elif reports.get(str(child.pid)) != 1.0:
                problems.append(f"process {child.index} {failing}")
        if problems:
            return False, "; ".join(problems)
        return True, "ok"


def _process_reports(metrics_dir: str, gauge: str) -> dict[str, float]:
    """The gauge's value per PID, as the bridge processes last wrote it."""
    registry = CollectorRegistry()
    _collect_files(registry, metrics_dir)
    return {
        sample.labels["pid"]: sample.value
        for family in registry.collect()
        if family.name == gauge
        for sample in family.samples
    }


def process_count(value: str) -> int:
    """`--processes`: a positive count, or `auto` for the usable CPUs."""
    if value == "auto":
        return usable_cpus()
    count = int(value)
    if count < 1:
        raise ValueError(value)
    return count


def watch_supervisor(
    request_stop: Callable[[], None], interval_seconds: float = 1.0
) -> threading.Thread | None:
    """In a supervised bridge process: write the sampled gauges every
    `interval_seconds`, and stop the bridge if the supervisor is gone.

    None when this process is not supervised.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor is None:
        return None

    def watch() -> None:
        while True:
            metrics.sample_shown()
            if os.getppid() != int(supervisor):
                log.error("supervisor_gone", supervisor_pid=supervisor)
                request_stop()
                return
            time.sleep(interval_seconds)

    thread = threading.Thread(target=watch, name="supervisor-watch",
                              daemon=True)
    thread.start()
    return thread


def process_fields() -> dict[str, object]:
    """What each log event of a supervised bridge carries: which of the
    supervisor's processes logged it. Empty when not supervised."""
    index = os.environ.get(PROCESS_INDEX_ENV)
    if os.environ.get(SUPERVISOR_PID_ENV) is None or index is None:
        return {}
    return {"process": int(index), "pid": os.getpid()}


def supervised_settings(settings: Settings) -> Settings:
    """A supervised process's settings: the supervisor serves the metrics
    port for all of them, so the process does not bind it."""
    if os.environ.get(SUPERVISOR_PID_ENV) is None:
        return settings
    return replace(settings, metrics=replace(settings.metrics, enabled=False))



# prometheus-client's multiprocess functions carry no type hints.


def _collect_files(registry: CollectorRegistry, metrics_dir: str) -> None:
    """Have `registry` serve the metrics the processes wrote."""
    multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
        registry, path=metrics_dir
    )


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead process's live gauges; its counters still count."""
    multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
        pid, metrics_dir
    )
