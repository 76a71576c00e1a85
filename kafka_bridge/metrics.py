"""The bridge's Prometheus metrics and the server that exposes them.

Metric objects live at module level, in the default registry, because the
process runs one bridge: every part increments the same counters. Label
values stay bounded (topic, endpoint name, status class, outcome); no key,
offset or payload ever becomes a label.

Under `--processes N` each bridge process writes its metrics to files that
the supervisor reads and serves as one (prometheus-client's multiprocess
mode, on when PROMETHEUS_MULTIPROC_DIR is set). Counters and histograms add
up across processes; each gauge says how its processes' values combine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from kafka_bridge.config import MetricsSettings
from kafka_bridge.errors import ConfigError
from kafka_bridge.version import __version__

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

CONSUMED = Counter(
    "kafka_bridge_messages_consumed",
    "Records consumed from Kafka and handed to the workers.",
    ["topic"],
)
POSTED = Counter(
    "kafka_bridge_messages_posted",
    "POST attempts, by endpoint and HTTP status class (or 'error').",
    ["endpoint", "status_class"],
)
DELIVERED = Counter(
    "kafka_bridge_messages_delivered",
    "Records the API accepted with a 2xx answer.",
    ["topic"],
)
RETRIED = Counter(
    "kafka_bridge_messages_retried",
    "Delivery attempts that failed and were retried after a backoff.",
    ["endpoint"],
)
FAILED = Counter(
    "kafka_bridge_messages_failed",
    "Records that could not be delivered, by the stage that failed.",
    ["topic", "stage"],
)
FAILED_OVER = Counter(
    "kafka_bridge_messages_failed_over",
    "Records sent to an endpoint other than the primary.",
    ["endpoint"],
)
DEAD_LETTERED = Counter(
    "kafka_bridge_messages_dead_lettered",
    "Records the dead-letter topic acknowledged, by the stage that failed.",
    ["topic", "stage"],
)
DLQ_LIMITER_DROPS = Counter(
    "kafka_bridge_dlq_limiter_drops",
    "Records shed by the dead-letter rate limiter (when_limited: drop).",
    ["topic"],
)
DLQ_LIMITER_BLOCKED = Counter(
    "kafka_bridge_dlq_limiter_blocked_seconds",
    "Time workers spent waiting for the dead-letter rate limiter.",
)
DEDUP_HITS = Counter(
    "kafka_bridge_dedup_hits",
    "Records skipped because their de-duplication key was seen delivered.",
)
DEDUP_ADDITIONS = Counter(
    "kafka_bridge_dedup_additions",
    "De-duplication keys remembered after a delivery.",
)
DEDUP_ROTATIONS = Counter(
    "kafka_bridge_dedup_rotations",
    "Generations of the de-duplication cache retired.",
)
BREAKER_STATE = Gauge(
    "kafka_bridge_breaker_state",
    "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.",
    ["endpoint"],
    multiprocess_mode="livemax",
)
LATE_COMPLETIONS = Counter(
    "kafka_bridge_late_completions",
    "Records finished after their partition was revoked; not committed.",
)
QUEUE_DEPTH = Gauge(
    "kafka_bridge_queue_depth",
    "Records waiting in the queue between the poll thread and the workers.",
    multiprocess_mode="livesum",
)
QUEUE_CAPACITY = Gauge(
    "kafka_bridge_queue_capacity",
    "Capacity of the queue between the poll thread and the workers.",
    multiprocess_mode="livesum",
)
PAUSED_PARTITIONS = Gauge(
    "kafka_bridge_paused_partitions",
    "Partitions paused because the queue is full.",
    multiprocess_mode="livesum",
)
PAUSES = Counter(
    "kafka_bridge_partition_pauses",
    "Times the poll thread paused its partitions because the queue was full.",
)
COMMITS = Counter(
    "kafka_bridge_commits",
    "Offset commits, by outcome.",
    ["outcome"],
)
REBALANCES = Counter(
    "kafka_bridge_rebalances",
    "Rebalance events that took partitions from this member (revoked or "
    "lost).",
)
RECORDS_IN_FLIGHT = Gauge(
    "kafka_bridge_records_in_flight",
    "Records consumed and not yet done (queued, being delivered or "
    "dead-lettered).",
    multiprocess_mode="livesum",
)
CONSUMER_LAG = Gauge(
    "kafka_bridge_consumer_lag",
    "Records behind the partition's high watermark, as librdkafka last "
    "reported it (committed offset to high watermark).",
    ["topic", "partition"],
    # A partition that moved keeps its old owner's last value in that
    # owner's file; the newest value is the current owner's.
    multiprocess_mode="livemostrecent",
)
COMMITTED_OFFSET = Gauge(
    "kafka_bridge_committed_offset",
    "The last offset committed for the partition.",
    ["topic", "partition"],
    multiprocess_mode="livemostrecent",
)
ATTEMPT_SECONDS = Histogram(
    "kafka_bridge_delivery_attempt_seconds",
    "Duration of one POST, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECORD_LATENCY = Histogram(
    "kafka_bridge_record_latency_seconds",
    "From the record's Kafka timestamp to the API's 2xx answer.",
    ["topic"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
TRANSFORM_SECONDS = Histogram(
    "kafka_bridge_transform_seconds",
    "Time to transform one record (and check its contract).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1),
)
PROCESS_READY = Gauge(
    "kafka_bridge_process_ready",
    "1 while this bridge process is ready (as /readyz), else 0.",
    multiprocess_mode="liveall",
)
PROCESS_HEALTHY = Gauge(
    "kafka_bridge_process_healthy",
    "1 while every thread of this bridge process runs (as /healthz).",
    multiprocess_mode="liveall",
)
# In multiprocess mode an Info is not written to the shared files; the
# supervisor, whose version this is too, shows it instead.
BUILD = Info("kafka_bridge_build", "Version of the running bridge.")
BUILD.info({"version": __version__})

_sampled: list[tuple[Gauge, Callable[[], float]]] = []

Labelled = TypeVar("Labelled", Counter, Histogram)
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Labelled, *labels: str) -> Labelled:
    """The metric's series for these label values, looked up once.

    `labels()` takes a lock and builds its key on each call, which costs
    more than the count itself: about 1.2 µs a call here, several times
    per record. Label values are few, so the cache stays small.
    """
    key = (id(metric), labels)
    series = _children.get(key)
    if series is None:
        series = _children[key] = metric.labels(*labels)
    return cast(Labelled, series)


def show(gauge: Gauge, read: Callable[[], float]) -> None:
    """Have `gauge` show what `read` returns.

    In one process the value is read when scraped. In multiprocess mode a
    scrape reads the processes' files, so the value is written there by
    `sample_shown`, which the bridge process calls every second.
    """
    if MULTIPROCESS:
        _sampled.append((gauge, read))
    else:
        gauge.set_function(read)


def sample_shown() -> None:
    """Write the current value of every gauge given to `show`."""
    for gauge, read in _sampled:
        gauge.set(read())


def status_class(status: int | None) -> str:
    """`2xx`-style class of an HTTP status, or `error` when none came."""
    return "error" if status is None else f"{status // 100}xx"


HealthCheck = Callable[[], tuple[bool, str]]


class MetricsServer:
    """`/metrics`, `/healthz` and `/readyz` on one port, on a daemon thread.

    The endpoints only read: no payload, key or offset-level detail is
    served, and nothing can be changed through them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        healthy: HealthCheck,
        ready: HealthCheck,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._server = _Server(
            (host, port),
            {"/healthz": healthy, "/readyz": ready},
            registry,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="metrics-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Serve; returns the bound port."""
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def bind_server(
    settings: MetricsSettings,
    *,
    healthy: HealthCheck,
    ready: HealthCheck,
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer | None:
    """The metrics server of the settings, bound now so that a bad address
    stops start-up as a configuration error rather than a crash; None when
    metrics are off."""
    if not settings.enabled:
        return None
    try:
        return MetricsServer(
            settings.host,
            settings.port,
            healthy=healthy,
            ready=ready,
            registry=registry,
        )
    except OSError as error:
        raise ConfigError.single(
            "metrics",
            rule="bindable",
            value=f"{settings.host}:{settings.port}",
            message=f"cannot listen there ({error.strerror or error})",
            fix="use an address of this host and a free port, or "
            "metrics.enabled: false",
        ) from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        checks: dict[str, HealthCheck],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(address, _Handler)
        self.checks = checks
        self.registry = registry


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "kafka-bridge"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self.server.registry)
            self._answer(200, body, CONTENT_TYPE_LATEST)
            return
        check = self.server.checks.get(path)
        if check is None:
            self._answer(404, b"not found\n", "text/plain")
            return
        passed, reason = check()
        status = 200 if passed else 503
        self._answer(status, f"{reason}\n".encode(), "text/plain")

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every few seconds would drown the bridge's own log.
        return

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
