"""The worker pool: transform each record and deliver it to the API.

Each worker takes a record from the queue, claims it with the offset
tracker (a record of a revoked partition is skipped: its new owner reads it
again), transforms it and POSTs it until the API accepts it. A record is
marked done only when the API answered 2xx; one that cannot be transformed,
or whose partition is taken away while it is retried, is left pending, so
its offset is never committed.
"""

from __future__ import annotations

import queue
import threading

import structlog

from kafka_bridge import metrics
from kafka_bridge.backoff import Backoff
from kafka_bridge.deadline import Deadline
from kafka_bridge.delivery import HttpDelivery
from kafka_bridge.errors import TransformError
from kafka_bridge.offsets import OffsetTracker, PartitionProgress
from kafka_bridge.records import Record
from kafka_bridge.transforms import Transform

log = structlog.get_logger(__name__)

# How often an idle worker looks up from the empty queue to see whether
# the pool is stopping.
_IDLE_CHECK_SECONDS = 0.2


class WorkerPool:
    """A fixed number of named worker threads draining one queue."""

    def __init__(
        self,
        records: queue.Queue[Record],
        tracker: OffsetTracker,
        transform: Transform,
        delivery: HttpDelivery,
        backoff: Backoff,
        size: int,
    ) -> None:
        self._records = records
        self._tracker = tracker
        self._transform = transform
        self._delivery = delivery
        self._backoff = backoff
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._work, name=f"worker-{index}", daemon=True
            )
            for index in range(size)
        ]

    def start(self) -> None:
        """Start every worker thread."""
        for thread in self._threads:
            thread.start()

    def stop_taking(self) -> None:
        """Let each worker finish its current record, then exit."""
        self._stopping.set()

    def join(self, timeout_seconds: float) -> bool:
        """Wait for the workers, sharing one time budget; True if all ended."""
        deadline = Deadline(timeout_seconds)
        for thread in self._threads:
            thread.join(deadline.remaining())
        return not any(thread.is_alive() for thread in self._threads)

    def alive(self) -> int:
        """How many workers are running."""
        return sum(thread.is_alive() for thread in self._threads)

    # -- one worker ---------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                record = self._records.get(timeout=_IDLE_CHECK_SECONDS)
            except queue.Empty:
                continue
            self._handle(record)

    def _handle(self, record: Record) -> None:
        claim = self._tracker.begin(record.topic, record.partition)
        if claim is None:
            return

        done = False
        try:
            done = self._transform_and_deliver(record, claim)
        except Exception:
            log.error(
                "record_failed_unexpectedly",
                **_where(record),
                exc_info=True,
            )
            metrics.FAILED.labels(record.topic, "unexpected").inc()
        finally:
            self._tracker.finish(claim, record.offset, done=done)

    def _transform_and_deliver(
        self, record: Record, claim: PartitionProgress
    ) -> bool:
        try:
            body = self._transform(record)
        except TransformError as error:
            # Retrying cannot change a transform's verdict; the record
            # stays pending and holds its partition's commit back.
            log.error(
                "record_not_transformable", reason=str(error), **_where(record)
            )
            metrics.FAILED.labels(record.topic, "transform").inc()
            return False

        return self._deliver(record, body, claim)

    def _deliver(
        self, record: Record, body: bytes, claim: PartitionProgress
    ) -> bool:
        """POST until accepted; False if the partition was taken away."""
        attempt = 0
        while True:
            attempt += 1
            outcome = self._delivery.attempt(body, record.coordinates)
            metrics.POSTED.labels(
                outcome.endpoint.name, metrics.status_class(outcome.status)
            ).inc()
            if outcome.delivered:
                metrics.DELIVERED.labels(record.topic).inc()
                log.debug(
                    "record_delivered", attempt=attempt, **_where(record)
                )
                return True

            delay_seconds = self._backoff.delay(attempt)
            log.warning(
                "delivery_failed",
                reason=outcome.describe(),
                endpoint=outcome.endpoint.name,
                attempt=attempt,
                retry_in_seconds=round(delay_seconds, 3),
                **_where(record),
            )
            metrics.RETRIED.labels(record.topic).inc()
            if claim.abandoned.wait(delay_seconds):
                metrics.FAILED.labels(record.topic, "abandoned").inc()
                return False


def _where(record: Record) -> dict[str, object]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
