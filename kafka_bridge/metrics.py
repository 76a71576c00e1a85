"""The bridge's Prometheus metrics and the server that exposes them.

Metric objects live at module level, in the default registry, because the
process runs one bridge: every part increments the same counters. Label
values stay bounded (topic, endpoint name, status class, outcome); no key,
offset or payload ever becomes a label.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Info, start_http_server

from kafka_bridge.version import __version__

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
)
LATE_COMPLETIONS = Counter(
    "kafka_bridge_late_completions",
    "Records finished after their partition was revoked; not committed.",
)
QUEUE_DEPTH = Gauge(
    "kafka_bridge_queue_depth",
    "Records waiting in the queue between the poll thread and the workers.",
)
QUEUE_CAPACITY = Gauge(
    "kafka_bridge_queue_capacity",
    "Capacity of the queue between the poll thread and the workers.",
)
PAUSED_PARTITIONS = Gauge(
    "kafka_bridge_paused_partitions",
    "Partitions paused because the queue is full.",
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
    "Partitions revoked or lost in consumer-group rebalances.",
)
BUILD = Info("kafka_bridge_build", "Version of the running bridge.")
BUILD.info({"version": __version__})


def status_class(status: int | None) -> str:
    """`2xx`-style class of an HTTP status, or `error` when none came."""
    return "error" if status is None else f"{status // 100}xx"


class MetricsServer:
    """The `/metrics` endpoint, served on its own daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and serve; returns the bound port (useful with port 0)."""
        self._server, self._thread = start_http_server(
            self._port, addr=self._host
        )
        self._thread.name = "metrics-server"
        return int(self._server.server_port)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
