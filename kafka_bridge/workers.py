"""The worker pool: each record delivered to the API or dead-lettered.

A worker takes a record from its lane, claims it with the offset tracker
(a record of a revoked partition is skipped: its new owner reads it again),
drops it if its de-duplication key was seen delivered, transforms it,
checks it against the API's contract and delivers it. A record that cannot
be read, transformed, or delivered goes to the dead-letter writer, which
finishes it once the DLQ broker acknowledged it. Without a dead-letter
topic such a record is left pending, holding its partition's commit back.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import structlog

from kafka_bridge import metrics
from kafka_bridge.contract import Contract
from kafka_bridge.dead_letters import DeadLetter, DeadLetterWriter, Submitted
from kafka_bridge.deadline import Deadline
from kafka_bridge.dedup import DedupCache, KeyExtractor
from kafka_bridge.errors import RecordError
from kafka_bridge.failover import DeliveryReport, FailoverDelivery
from kafka_bridge.lanes import Lanes
from kafka_bridge.offsets import OffsetTracker, PartitionProgress
from kafka_bridge.records import Record
from kafka_bridge.transforms import Transform

log = structlog.get_logger(__name__)

# How often an idle worker looks up from its empty lane to see whether the
# pool is stopping.
_IDLE_CHECK_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Dedup:
    """The cache of delivered keys and how a record's key is found."""

    cache: DedupCache
    key_of: KeyExtractor


class WorkerPool:
    """A fixed number of named worker threads, one per lane."""

    def __init__(
        self,
        lanes: Lanes,
        tracker: OffsetTracker,
        transform: Transform,
        delivery: FailoverDelivery,
        size: int,
        *,
        contract: Contract | None = None,
        dedup: Dedup | None = None,
        dead_letters: DeadLetterWriter | None = None,
    ) -> None:
        self._lanes = lanes
        self._tracker = tracker
        self._transform = transform
        self._delivery = delivery
        self._contract = contract
        self._dedup = dedup
        self._dead_letters = dead_letters
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._work, args=(index,), name=f"worker-{index}",
                daemon=True,
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

    def _work(self, index: int) -> None:
        while not self._stopping.is_set():
            try:
                record = self._lanes.get(index, _IDLE_CHECK_SECONDS)
            except queue.Empty:
                continue
            self._handle(record)

    def _handle(self, record: Record) -> None:
        claim = self._tracker.begin(record.topic, record.partition)
        if claim is None:
            return

        done: bool | None = False
        try:
            done = self._process(record, claim)
        except Exception:
            log.error(
                "record_failed_unexpectedly", **_where(record), exc_info=True
            )
            metrics.FAILED.labels(record.topic, "unexpected").inc()
        finally:
            if done is not None:
                self._finish(claim, record, done=done)

    def _process(
        self, record: Record, claim: PartitionProgress
    ) -> bool | None:
        """True: done. False: leave uncommitted. None: handed to the
        dead-letter writer, which finishes the claim itself."""
        dedup_key = self._dedup.key_of(record) if self._dedup else None
        if dedup_key is not None and self._is_duplicate(dedup_key, record):
            return True

        started = time.monotonic()
        try:
            body = self._transform(record)
            if self._contract is not None:
                self._contract.check(body)
        except RecordError as error:
            return self._dead_letter(claim, DeadLetter.of_error(record, error))

        metrics.TRANSFORM_SECONDS.observe(time.monotonic() - started)

        report = self._deliver(record, body, claim)
        if report.delivered:
            self._remember(dedup_key)
            metrics.DELIVERED.labels(record.topic).inc()
            _observe_latency(record)
            log.debug("record_delivered", **_where(record))
            return True
        if report.cancelled:
            return False
        return self._dead_letter(claim, DeadLetter.of_delivery(record, report))

    def _deliver(
        self, record: Record, body: bytes, claim: PartitionProgress
    ) -> DeliveryReport:
        """Deliver; without a dead-letter topic, a record whose attempts ran
        out is tried again rather than given up."""
        while True:
            report = self._delivery.deliver(
                body, record.coordinates, claim.abandoned
            )
            if report.delivered or report.cancelled:
                return report
            if self._dead_letters is not None or not report.retryable:
                return report
            log.warning(
                "record_still_undelivered", reason=report.reason,
                **_where(record),
            )

    def _dead_letter(
        self, claim: PartitionProgress, letter: DeadLetter
    ) -> bool | None:
        record = letter.record
        metrics.FAILED.labels(record.topic, letter.stage).inc()
        if self._dead_letters is None:
            log.error(
                "record_not_deliverable",
                stage=letter.stage,
                reason=letter.error_message,
                **_where(record),
            )
            return False

        log.warning(
            "record_dead_lettering",
            stage=letter.stage,
            reason=letter.error_message,
            **_where(record),
        )

        def written(acknowledged: bool) -> None:
            self._finish(claim, record, done=acknowledged)

        submitted = self._dead_letters.submit(
            letter, written, cancel=claim.abandoned
        )
        if submitted is Submitted.QUEUED:
            return None
        # A record the limiter shed is let go on purpose; one whose wait
        # for a token was cut short by shutdown stays uncommitted.
        return submitted is Submitted.DROPPED

    def _is_duplicate(self, key: bytes, record: Record) -> bool:
        assert self._dedup is not None
        if not self._dedup.cache.seen(key):
            return False
        metrics.DEDUP_HITS.inc()
        log.debug("record_duplicate", **_where(record))
        return True

    def _remember(self, key: bytes | None) -> None:
        if key is None or self._dedup is None:
            return
        rotations = self._dedup.cache.rotations
        self._dedup.cache.add(key)
        metrics.DEDUP_ADDITIONS.inc()
        metrics.DEDUP_ROTATIONS.inc(self._dedup.cache.rotations - rotations)

    def _finish(
        self, claim: PartitionProgress, record: Record, *, done: bool
    ) -> None:
        if not self._tracker.finish(claim, record.offset, done=done):
            metrics.LATE_COMPLETIONS.inc()
            log.info("late_completion_ignored", **_where(record))


def _observe_latency(record: Record) -> None:
    """Kafka timestamp to 2xx; a clock skewed behind it is not counted."""
    if record.timestamp_ms is None:
        return
    seconds = time.time() - record.timestamp_ms / 1000
    if seconds >= 0:
        metrics.RECORD_LATENCY.labels(record.topic).observe(seconds)


def _where(record: Record) -> dict[str, object]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
