"""The bridge: builds the moving parts, starts them, stops them in order.

Parts, in start order: the metrics server, the dead-letter writer, the
worker pool, the poll thread. They meet at two shared objects: the lanes,
bounded queues from the poll thread to the workers, and the offset tracker
(workers and the dead-letter writer report what is done, the poll thread
commits it).

Stopping is a written sequence under one deadline; see `Bridge.stop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException

from kafka_bridge import metrics
from kafka_bridge.breaker import BreakerState, CircuitBreaker
from kafka_bridge.config import Settings, load_contract_schema
from kafka_bridge.contract import Contract
from kafka_bridge.dead_letters import DeadLetterWriter
from kafka_bridge.deadline import Deadline
from kafka_bridge.dedup import DedupCache, key_extractor
from kafka_bridge.delivery import HttpSender, endpoints
from kafka_bridge.errors import ConfigError
from kafka_bridge.failover import FailoverDelivery, Route
from kafka_bridge.lanes import Lanes
from kafka_bridge.offsets import OffsetTracker
from kafka_bridge.poller import Poller
from kafka_bridge.retry import RetryPolicy
from kafka_bridge.token_bucket import TokenBucket
from kafka_bridge.transforms import load_transform
from kafka_bridge.workers import Batching, Dedup, WorkerPool

log = structlog.get_logger(__name__)

# librdkafka waits up to a second between fetches when its local queue is
# non-empty; a consumer that drains fast then idles. 10 ms keeps it busy.
_FETCH_QUEUE_BACKOFF_MS = 10

_STATISTICS_INTERVAL_MS = 5000

# librdkafka prefetches up to 64 MiB per consumer by default, which made up
# most of the bridge's memory; 16 MiB is still seconds of records at the
# fastest rate the bridge delivers 1 KB records.
_QUEUED_MAX_KBYTES = 16384

# The bridge stores and commits offsets itself, after delivery.
_OWNED_CONSUMER_KEYS = {
    "enable.auto.offset.store": False,
    "enable.auto.commit": False,
}

# Of the shutdown deadline, the part kept for the last commit and closing
# the consumer, which need the broker.
_CLOSE_RESERVE_FRACTION = 0.25

# How often a stopping bridge looks whether the queued records are taken.
_DRAIN_CHECK_SECONDS = 0.05


class Bridge:
    """One running bridge: start(), then stop() or run() until signalled."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        pipeline = settings.pipeline

        self.lanes = Lanes(
            pipeline.ordering, pipeline.workers, pipeline.queue_capacity
        )
        self.tracker = OffsetTracker()
        self._sender = HttpSender(settings.api, pool_size=pipeline.workers)
        with _librdkafka_settings("kafka.producer"):
            self.dead_letters = _dead_letter_writer(settings)
        self.delivery = failover_delivery(settings, self._sender)
        self.workers = WorkerPool(
            self.lanes,
            self.tracker,
            load_transform(pipeline.transform),
            self.delivery,
            size=pipeline.workers,
            contract=contract(settings),
            dedup=_dedup(settings),
            dead_letters=self.dead_letters,
            batching=_batching(settings),
        )
        with _librdkafka_settings("kafka.consumer"):
            self.poller = self._poller(settings)
        self._metrics_server = metrics.bind_server(
            settings.metrics, healthy=self.health, ready=self.readiness
        )
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self.metrics_port: int | None = None

    def _poller(self, settings: Settings) -> Poller:
        pipeline = settings.pipeline
        return Poller(
            consumer_config(settings),
            settings.kafka.topics,
            self.lanes,
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

    def start(self) -> None:
        """Start the metrics server, the DLQ writer, the workers and the
        poll thread: each part is running before the one that feeds it."""
        log.info("bridge_starting", topics=list(self.settings.kafka.topics))
        if self._metrics_server is not None:
            self.metrics_port = self._metrics_server.start()
        metrics.QUEUE_CAPACITY.set(self.lanes.capacity)
        metrics.show(metrics.QUEUE_DEPTH, self.lanes.qsize)
        metrics.show(metrics.RECORDS_IN_FLIGHT, self.tracker.pending_count)
        metrics.show(metrics.PROCESS_READY, lambda: self.readiness()[0])
        metrics.show(metrics.PROCESS_HEALTHY, lambda: self.health()[0])

        if self.dead_letters is not None:
            self.dead_letters.start()
        self.workers.start()
        self.poller.start()
        log.info(
            "bridge_started",
            workers=self.settings.pipeline.workers,
            metrics_port=self.metrics_port,
        )

    def health(self) -> tuple[bool, str]:
        """Alive: every thread of the bridge is running."""
        stopped = []
        if not self.poller.is_alive():
            stopped.append("poller")
        if self.workers.alive() < self.settings.pipeline.workers:
            stopped.append("workers")
        if self.dead_letters is not None and not self.dead_letters.is_alive():
            stopped.append("dlq-writer")
        if stopped:
            return False, f"not running: {', '.join(stopped)}"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready: in the group with an assignment, and some endpoint's
        breaker lets requests through."""
        if not self.poller.assigned.is_set():
            return False, "not assigned to the consumer group yet"
        open_ = BreakerState.OPEN
        if all(r.breaker.state is open_ for r in self.delivery.routes):
            return False, "every endpoint's circuit breaker is open"
        return True, "ok"

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
           bounded by what it holds and what the lanes hold.
        2. Workers work off the queued records, then finish the ones they
           hold and exit. Records of one partition sit in several lanes
           under `ordering: key`; a stop that left some of them queued
           would commit below them although later ones were delivered,
           and a restart would deliver those again. A record still being
           retried when the time left for it is up is abandoned,
           uncommitted, to be delivered after a restart.
        3. The dead-letter writer flushes what the workers handed it; what
           the broker did not acknowledge in time stays uncommitted.
        4. The poll thread commits what is done and closes the consumer,
           which leaves the group at once instead of after a session
           timeout; a broker that does not answer cannot hold the exit
           past the deadline.
        5. The HTTP connections and the metrics server go last, so the
           metrics show the shutdown to the end.
        """
        if self._stopped.is_set():
            return True
        seconds = self.settings.pipeline.shutdown_deadline_seconds
        deadline = Deadline(seconds)
        reserve_seconds = seconds * _CLOSE_RESERVE_FRACTION
        log.info("bridge_stopping", deadline_seconds=seconds)

        self.poller.stop_fetching()

        drained = self._drain(deadline.remaining(reserve_seconds))
        self.workers.stop_taking()
        finished = drained and self.workers.join(
            deadline.remaining(reserve_seconds)
        )
        if not finished:
            log.warning("workers_abandoned_records")
            self.tracker.abandon()
            self.workers.join(deadline.remaining(reserve_seconds / 2))

        flushed = True
        if self.dead_letters is not None:
            flushed = self.dead_letters.stop(
                deadline.remaining(reserve_seconds / 2)
            )
            if not flushed:
                log.warning("dead_letters_unacknowledged")

        closed = self.poller.finish(deadline.remaining())
        if not closed:
            log.warning("consumer_close_timed_out")

        self._sender.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self._stopped.set()
        clean = finished and flushed and closed
        log.info("bridge_stopped", clean=clean)
        return clean

    def _drain(self, timeout_seconds: float) -> bool:
        """Wait until the workers took every queued record; False if the
        time ran out first."""
        deadline = Deadline(timeout_seconds)
        while self.poller.holding() or self.lanes.qsize():
            if deadline.expired:
                log.warning(
                    "drain_timed_out",
                    queued=self.lanes.qsize() + self.poller.holding(),
                )
                return False
            time.sleep(min(_DRAIN_CHECK_SECONDS, deadline.remaining()))
        return True


def check_settings(settings: Settings) -> None:
    """Raise ConfigError for what start-up would refuse beyond the schema:
    a transform that cannot be loaded, a contract that cannot be read, a
    client property librdkafka refuses.

    librdkafka checks properties when a client is made, so the consumer
    and the dead-letter producer are made as `run` makes them, but told
    of no broker, so that they connect nowhere, and let go at once.
    """
    load_transform(settings.pipeline.transform)
    contract(settings)

    offline = dataclasses.replace(
        settings,
        kafka=dataclasses.replace(settings.kafka, bootstrap_servers=""),
    )
    with _librdkafka_settings("kafka.consumer"):
        Consumer(consumer_config(offline)).close()
    with _librdkafka_settings("kafka.producer"):
        _dead_letter_writer(offline)


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka consumer settings: our defaults, the user's, ours.

    The offset settings come last: the bridge stores and commits offsets
    itself, after delivery, and configuration validation refuses a user
    value that would contradict them.
    """
    kafka = settings.kafka
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        "client.id": f"kafka-bridge-{socket.gethostname()}",
        "auto.offset.reset": "earliest",
        # A rebalance then moves only the partitions that change owner;
        # the others keep flowing instead of being revoked from everyone.
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.queue.backoff.ms": _FETCH_QUEUE_BACKOFF_MS,
        "queued.max.messages.kbytes": _QUEUED_MAX_KBYTES,
        # librdkafka's statistics carry the consumer lag per partition.
        "statistics.interval.ms": _STATISTICS_INTERVAL_MS,
        "logger": logging.getLogger("librdkafka"),
        **kafka.consumer,
        **_OWNED_CONSUMER_KEYS,
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka producer settings for the dead-letter topic."""
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": f"kafka-bridge-dlq-{socket.gethostname()}",
        **settings.kafka.producer,
    }


def failover_delivery(
    settings: Settings, sender: HttpSender
) -> FailoverDelivery:
    """The delivery path of the settings: retries, breakers, failover."""
    return FailoverDelivery(sender, _routes(settings), _retry_policy(settings))


def contract(settings: Settings) -> Contract | None:
    """The API's JSON Schema contract, if one is configured."""
    path = settings.api.contract_schema
    return Contract(load_contract_schema(path)) if path else None


def _retry_policy(settings: Settings) -> RetryPolicy:
    retry = settings.api.retry
    return RetryPolicy(
        initial_backoff_seconds=retry.initial_backoff_seconds,
        max_backoff_seconds=retry.max_backoff_seconds,
        multiplier=retry.multiplier,
        max_attempts=retry.max_attempts,
        max_elapsed_seconds=retry.max_elapsed_seconds,
        retryable_statuses=retry.retryable_statuses,
        max_retry_after_seconds=retry.max_retry_after_seconds,
    )


def _routes(settings: Settings) -> list[Route]:
    breaker = settings.api.breaker
    return [
        Route(
            endpoint,
            CircuitBreaker(
                endpoint.name,
                failure_threshold=breaker.failure_threshold,
                cool_down_seconds=breaker.cool_down_seconds,
            ),
        )
        for endpoint in endpoints(settings.api)
    ]


def _dedup(settings: Settings) -> Dedup | None:
    dedup = settings.dedup
    if not dedup.enabled:
        return None
    return Dedup(
        DedupCache(dedup.capacity, dedup.max_age_seconds),
        key_extractor(dedup.key),
    )


@contextlib.contextmanager
def _librdkafka_settings(section: str) -> Iterator[None]:
    """librdkafka refuses an unknown property or a bad value when the client
    is made: that is a configuration error, exit code 2, not a crash."""
    try:
        yield
    except KafkaException as error:
        kafka_error = error.args[0]
        if kafka_error.code() != KafkaError._INVALID_ARG:
            raise
        # The message quotes the property and, for a bad value, the value:
        # only the property's name is shown, in case the value is a secret.
        # The property is the last quoted name in the message.
        names = re.findall(r'"([a-z0-9._]+)"', kafka_error.str())
        reason = kafka_error.str().split(":")[0].split(' "')[0]
        raise ConfigError.single(
            f"{section}.{names[-1]}" if names else section,
            rule="librdkafka",
            value="",
            message=f"librdkafka refused it ({reason})",
            fix="check the property's name and value against librdkafka's "
            "CONFIGURATION.md",
        ) from None


def _batching(settings: Settings) -> Batching | None:
    delivery = settings.delivery
    if delivery.mode != "batch":
        return None
    return Batching(
        max_records=delivery.batch_max_records,
        max_bytes=delivery.batch_max_bytes,
        max_wait_seconds=delivery.batch_max_wait_ms / 1000,
        batch_format=delivery.batch_format,
    )


def _dead_letter_writer(settings: Settings) -> DeadLetterWriter | None:
    dlq = settings.dlq
    if dlq.topic is None:
        return None
    return DeadLetterWriter(
        dlq.topic,
        producer_config(settings),
        TokenBucket(dlq.rate_per_second, dlq.burst),
        drop_when_limited=dlq.when_limited == "drop",
    )
