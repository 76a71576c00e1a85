"""The bridge: builds the moving parts, starts them, stops them in order.

Parts, in start order: the metrics server, the worker pool, the poll thread.
They meet at two shared objects: the bounded record queue (poll thread to
workers) and the offset tracker (workers report what is done, the poll
thread commits it).

Stopping is a written sequence under one deadline; see `Bridge.stop`.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import Any

import structlog

from kafka_bridge import metrics
from kafka_bridge.backoff import Backoff
from kafka_bridge.config import Settings
from kafka_bridge.deadline import Deadline
from kafka_bridge.delivery import HttpDelivery
from kafka_bridge.errors import ConfigError, ConfigProblem
from kafka_bridge.offsets import OffsetTracker
from kafka_bridge.poller import Poller
from kafka_bridge.records import Record
from kafka_bridge.transforms import load_transform
from kafka_bridge.workers import WorkerPool

log = structlog.get_logger(__name__)

# librdkafka waits up to a second between fetches when its local queue is
# non-empty; a consumer that drains fast then idles. 10 ms keeps it busy.
_FETCH_QUEUE_BACKOFF_MS = 10

# The bridge stores and commits offsets itself, after delivery.
_OWNED_CONSUMER_KEYS = {
    "enable.auto.offset.store": False,
    "enable.auto.commit": False,
}

# Of the shutdown deadline, the part kept for the last commit and closing
# the consumer, which need the broker.
_CLOSE_RESERVE_FRACTION = 0.25


class Bridge:
    """One running bridge: start(), then stop() or run() until signalled."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        pipeline = settings.pipeline

        self.records: queue.Queue[Record] = queue.Queue(
            maxsize=pipeline.queue_capacity
        )
        self.tracker = OffsetTracker()
        self._delivery = HttpDelivery(settings.api, pool_size=pipeline.workers)
        self.workers = WorkerPool(
            self.records,
            self.tracker,
            load_transform(pipeline.transform),
            self._delivery,
            _backoff(settings),
            size=pipeline.workers,
        )
        self.poller = Poller(
            consumer_config(settings),
            settings.kafka.topics,
            self.records,
            self.tracker,
            batch_size=pipeline.batch_size,
            poll_timeout_seconds=pipeline.poll_timeout_seconds,
            resume_at_fraction=pipeline.resume_at_fraction,
            revoke_timeout_seconds=min(
                settings.api.connect_timeout_seconds
                + settings.api.read_timeout_seconds,
                pipeline.shutdown_deadline_seconds,
            ),
            on_failure=self.request_stop,
        )
        self._metrics_server = (
            metrics.MetricsServer(settings.metrics.host, settings.metrics.port)
            if settings.metrics.enabled
            else None
        )
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self.metrics_port: int | None = None

    def start(self) -> None:
        """Start the metrics server, the workers and the poll thread."""
        log.info("bridge_starting", topics=list(self.settings.kafka.topics))
        if self._metrics_server is not None:
            self.metrics_port = self._metrics_server.start()
        metrics.QUEUE_CAPACITY.set(self.records.maxsize)
        metrics.QUEUE_DEPTH.set_function(self.records.qsize)

        self.workers.start()
        self.poller.start()
        log.info(
            "bridge_started",
            workers=self.settings.pipeline.workers,
            metrics_port=self.metrics_port,
        )

    def request_stop(self) -> None:
        """Ask `run` to stop; safe to call from a signal handler."""
        self._stop_requested.set()

    def run(self) -> int:
        """Start, wait for a stop request, stop; the process exit code."""
        self.start()
        self._stop_requested.wait()
        clean = self.stop()
        if self.poller.failure is not None:
            return 1
        return 0 if clean else 1

    def stop(self) -> bool:
        """Stop within the shutdown deadline; True if nothing was cut short.

        1. The poll thread hands out no more records, so the work left is
           bounded by what the workers hold.
        2. Workers finish the records they hold and exit; a record still
           being retried when the time left for it is up is abandoned,
           uncommitted, to be delivered after a restart.
        3. The poll thread commits what is done and closes the consumer,
           which leaves the group at once instead of after a session
           timeout; a broker that does not answer cannot hold the exit
           past the deadline.
        4. The HTTP connections and the metrics server go last, so the
           metrics show the shutdown to the end.
        """
        if self._stopped.is_set():
            return True
        seconds = self.settings.pipeline.shutdown_deadline_seconds
        deadline = Deadline(seconds)
        reserve_seconds = seconds * _CLOSE_RESERVE_FRACTION
        log.info("bridge_stopping", deadline_seconds=seconds)

        self.poller.stop_fetching()

        self.workers.stop_taking()
        finished = self.workers.join(deadline.remaining(reserve_seconds))
        if not finished:
            log.warning("workers_abandoned_records")
            self.tracker.abandon()
            self.workers.join(deadline.remaining(reserve_seconds / 2))

        closed = self.poller.finish(deadline.remaining())
        if not closed:
            log.warning("consumer_close_timed_out")

        self._delivery.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self._stopped.set()
        log.info("bridge_stopped", clean=finished and closed)
        return finished and closed


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka consumer settings: our defaults, the user's, ours.

    The keys the bridge must own to keep its delivery promise are refused
    when the user sets them otherwise.
    """
    kafka = settings.kafka
    user = dict(kafka.consumer)
    for key, required in _OWNED_CONSUMER_KEYS.items():
        if key in user and _as_bool(user[key]) != required:
            raise ConfigError([ConfigProblem(
                f"kafka.consumer.{key}",
                rule="owned by the bridge",
                value=str(user[key]),
                fix="remove it: the bridge stores and commits offsets "
                "itself, only after a record is delivered",
            )])

    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        "client.id": f"kafka-bridge-{socket.gethostname()}",
        "auto.offset.reset": "earliest",
        "fetch.queue.backoff.ms": _FETCH_QUEUE_BACKOFF_MS,
        "logger": logging.getLogger("librdkafka"),
        **user,
        **_OWNED_CONSUMER_KEYS,
    }


def _backoff(settings: Settings) -> Backoff:
    retry = settings.api.retry
    return Backoff(
        initial_seconds=retry.initial_backoff_seconds,
        max_seconds=retry.max_backoff_seconds,
        multiplier=retry.multiplier,
    )


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)
