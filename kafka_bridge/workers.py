"""The worker pool: each record delivered to the API or dead-lettered.

A worker takes a record from its lane, claims it with the offset tracker
(a record of a revoked partition is skipped: its new owner reads it again),
drops it if its de-duplication key was seen delivered, transforms it,
checks it against the API's contract and delivers it. A record that cannot
be read, transformed, or delivered goes to the dead-letter writer, which
finishes it once the DLQ broker acknowledged it. Without a dead-letter
topic such a record is left pending, holding its partition's commit back.

In batch mode a worker takes up to a batch of records from its lane,
prepares each as above, and POSTs the payloads together; a batch the API
refuses for good is split in halves, and the halves sent again, until the
records it refuses are found and dead-lettered alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

import structlog

from kafka_bridge import batches, metrics
from kafka_bridge.contract import Contract
from kafka_bridge.dead_letters import DeadLetter, DeadLetterWriter, Submitted
from kafka_bridge.deadline import Deadline
from kafka_bridge.dedup import DedupCache, KeyExtractor
from kafka_bridge.errors import RecordError
from kafka_bridge.failover import Cancel, DeliveryReport, FailoverDelivery
from kafka_bridge.lanes import Lanes
from kafka_bridge.offsets import OffsetTracker, PartitionProgress
from kafka_bridge.records import Record
from kafka_bridge.transforms import Transform

log = structlog.get_logger(__name__)
# The same logger through the standard library, whose level check is cheap.
_stdlib_log = logging.getLogger(__name__)

# How often an idle worker looks up from its empty lane to see whether the
# pool is stopping.
_IDLE_CHECK_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Dedup:
    """The cache of delivered keys and how a record's key is found."""

    cache: DedupCache
    key_of: KeyExtractor


@dataclass(frozen=True, slots=True)
class Batching:
    """How records are grouped into one POST (`delivery.mode: batch`)."""

    max_records: int
    max_bytes: int
    max_wait_seconds: float
    batch_format: str


@dataclass(slots=True)
class _Prepared:
    """A claimed record with its payload, ready to be delivered."""

    record: Record
    claim: PartitionProgress
    body: bytes
    dedup_key: bytes | None


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
        batching: Batching | None = None,
    ) -> None:
        self._lanes = lanes
        self._tracker = tracker
        self._transform = transform
        self._delivery = delivery
        self._contract = contract
        self._dedup = dedup
        self._dead_letters = dead_letters
        self._batching = batching
        self._stopping = threading.Event()
        # Each worker thread's _HeldClaims, found from the methods it calls.
        self._held = threading.local()
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
        held = self._held.claims = _HeldClaims()
        while not self._stopping.is_set():
            records = self._take(index)
            try:
                prepared = self._prepare_all(records)
                if self._batching is None:
                    for item in prepared:
                        self._deliver_one(item)
                else:
                    self._deliver_batches(prepared, self._batching)
            except Exception:
                self._release_after_failure(held)

    def _release_after_failure(self, held: _HeldClaims) -> None:
        """Release what the failed turn still held, uncommitted: it holds
        its partition's commit back, and the partition's next owner, or
        this bridge after a restart, delivers it. A claim left open would
        also hold a revoke for its whole timeout. The worker lives on."""
        claims = held.take_all()
        log.error(
            "records_failed_unexpectedly", released=len(claims), exc_info=True
        )
        for claim, _ in claims:
            metrics.FAILED.labels(claim.key[0], "unexpected").inc()
        self._tracker.finish_all(claims, done=False)

    def _take(self, index: int) -> list[Record]:
        """The next record, or the next batch of them; [] when idle."""
        if self._batching is None:
            return self._lanes.take(index, 1, _IDLE_CHECK_SECONDS)
        return batches.collect(
            lambda most, timeout: self._lanes.take(index, most, timeout),
            max_records=self._batching.max_records,
            max_wait_seconds=self._batching.max_wait_seconds,
            idle_seconds=_IDLE_CHECK_SECONDS,
        )

    def _prepare_all(self, records: list[Record]) -> list[_Prepared]:
        """Claim the records (all at once: one lock for the batch), then
        prepare each; a record of a partition that is gone is skipped."""
        claims = self._tracker.begin_all(
            [(record.topic, record.partition) for record in records]
        )
        held: _HeldClaims = self._held.claims
        for record, claim in zip(records, claims, strict=True):
            if claim is not None:
                held.hold(claim, record.offset)
        return [
            prepared
            for record, claim in zip(records, claims, strict=True)
            if claim is not None
            and (prepared := self._prepare(record, claim)) is not None
        ]

    def _prepare(
        self, record: Record, claim: PartitionProgress
    ) -> _Prepared | None:
        """De-duplicate, transform and check one claimed record.

        None when there is nothing to deliver: the record is a repeat, or
        it failed and went to the dead letters.
        """
        dedup_key = self._dedup.key_of(record) if self._dedup else None
        if dedup_key is not None and self._is_duplicate(dedup_key, record):
            self._finish(claim, record, done=True)
            return None

        started = time.monotonic()
        try:
            body = self._transform(record)
            if self._contract is not None:
                self._contract.check(body)
        except RecordError as error:
            self._give_up(claim, DeadLetter.of_error(record, error))
            return None
        metrics.TRANSFORM_SECONDS.observe(time.monotonic() - started)
        return _Prepared(record, claim, body, dedup_key)

    def _deliver_one(self, item: _Prepared) -> None:
        report = self._deliver(
            item.body, item.record.coordinates, item.claim.abandoned
        )
        self._settle([item], report)

    def _deliver_batches(
        self, items: list[_Prepared], batching: Batching
    ) -> None:
        sizes = [len(item.body) for item in items]
        for start, end in batches.by_size(sizes, batching.max_bytes):
            self._deliver_batch(items[start:end], batching.batch_format)

    def _deliver_batch(
        self, items: list[_Prepared], batch_format: str
    ) -> None:
        """POST the batch; if it is refused for good, bisect it."""
        if not items:
            return
        report = self._deliver(
            batches.encode([item.body for item in items], batch_format),
            batches.batch_key(items[0].record, items[-1].record),
            _AnyAbandoned([item.claim for item in items]),
            content_type=batches.FORMATS[batch_format],
        )
        refused_for_good = not (
            report.delivered or report.cancelled or report.retryable
        )
        if refused_for_good and len(items) > 1:
            middle = len(items) // 2
            self._deliver_batch(items[:middle], batch_format)
            self._deliver_batch(items[middle:], batch_format)
            return
        self._settle(items, report)

    def _deliver(
        self,
        body: bytes,
        idempotency_key: str,
        cancel: Cancel,
        content_type: str | None = None,
    ) -> DeliveryReport:
        """Deliver; without a dead-letter topic, a payload whose attempts
        ran out is tried again rather than given up."""
        while True:
            report = self._delivery.deliver(
                body, idempotency_key, cancel, content_type=content_type
            )
            if report.delivered or report.cancelled:
                return report
            if self._dead_letters is not None or not report.retryable:
                return report
            log.warning(
                "still_undelivered",
                reason=report.reason,
                idempotency_key=idempotency_key,
            )

    def _settle(self, items: list[_Prepared], report: DeliveryReport) -> None:
        """Finish the records the report speaks for."""
        if report.delivered:
            self._settle_delivered(items)
            return
        for item in items:
            record = item.record
            if report.cancelled:
                self._finish(item.claim, record, done=False)
            else:
                self._give_up(
                    item.claim, DeadLetter.of_delivery(record, report)
                )

    def _settle_delivered(self, items: list[_Prepared]) -> None:
        """Count, remember and finish delivered records, a batch's worth
        under one acquisition of the tracker's lock."""
        # Asked once: a filtered debug call still costs microseconds, and
        # this runs for every record.
        debug = _stdlib_log.isEnabledFor(logging.DEBUG)
        now = time.time()
        for item in items:
            record = item.record
            self._remember(item.dedup_key)
            _observe_latency(record, now)
            if debug:
                log.debug("record_delivered", **_where(record))
        for topic, count in Counter(i.record.topic for i in items).items():
            metrics.child(metrics.DELIVERED, topic).inc(count)

        # Let go only now: a step above that failed leaves them held, to
        # be released with the rest of the turn.
        held: _HeldClaims = self._held.claims
        for item in items:
            held.let_go(item.claim, item.record.offset)
        current = self._tracker.finish_all(
            [(item.claim, item.record.offset) for item in items], done=True
        )
        for item, is_current in zip(items, current, strict=True):
            if not is_current:
                self._late(item.record)

    def _give_up(self, claim: PartitionProgress, letter: DeadLetter) -> None:
        """Dead-letter the record, or hold it when that is not possible."""
        done = self._dead_letter(claim, letter)
        if done is None:
            # The dead-letter writer finishes it once the broker answers.
            self._let_go(claim, letter.record.offset)
        else:
            self._finish(claim, letter.record, done=done)

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
        self._let_go(claim, record.offset)
        if not self._tracker.finish(claim, record.offset, done=done):
            self._late(record)

    def _let_go(self, claim: PartitionProgress, offset: int) -> None:
        """The worker no longer answers for this record. Called from the
        dead-letter writer's thread too, which holds no claims."""
        held: _HeldClaims | None = getattr(self._held, "claims", None)
        if held is not None:
            held.let_go(claim, offset)

    def _late(self, record: Record) -> None:
        """Its partition was revoked while it was delivered: the new owner
        delivers it again, and this completion changes nothing."""
        metrics.LATE_COMPLETIONS.inc()
        log.info("late_completion_ignored", **_where(record))


class _HeldClaims:
    """The records one worker claimed and has neither finished nor handed
    to the dead-letter writer: what a turn that fails unexpectedly must
    release."""

    __slots__ = ("_claims",)

    def __init__(self) -> None:
        # Keyed by the claim's identity: a later assignment of the same
        # partition is another claim.
        self._claims: dict[tuple[int, int], tuple[PartitionProgress, int]]
        self._claims = {}

    def hold(self, claim: PartitionProgress, offset: int) -> None:
        self._claims[(id(claim), offset)] = (claim, offset)

    def let_go(self, claim: PartitionProgress, offset: int) -> None:
        self._claims.pop((id(claim), offset), None)

    def take_all(self) -> list[tuple[PartitionProgress, int]]:
        claims = list(self._claims.values())
        self._claims.clear()
        return claims


class _AnyAbandoned:
    """Set as soon as any record of a batch is abandoned.

    A batch spans partitions; losing one of them cancels the batch, whose
    records then stay uncommitted and are delivered again later.
    """

    _SLICE_SECONDS = 0.05

    def __init__(self, claims: list[PartitionProgress]) -> None:
        self._events = [claim.abandoned for claim in claims]

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = Deadline(timeout if timeout is not None else 1e9)
        while not self.is_set():
            remaining = deadline.remaining()
            if remaining == 0.0:
                return False
            self._events[0].wait(min(remaining, self._SLICE_SECONDS))
        return True


def _observe_latency(record: Record, answered_at: float) -> None:
    """Kafka timestamp to 2xx; a clock skewed behind it is not counted."""
    if record.timestamp_ms is None:
        return
    seconds = answered_at - record.timestamp_ms / 1000
    if seconds >= 0:
        metrics.child(metrics.RECORD_LATENCY, record.topic).observe(seconds)


def _where(record: Record) -> dict[str, object]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
