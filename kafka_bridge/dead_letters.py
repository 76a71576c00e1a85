"""The dead-letter topic: where records that cannot be delivered end up.

A record is dead-lettered with its original key, value and headers, plus
headers saying where it came from and why it failed. Its offset counts as
done only once the DLQ broker acknowledged the write: the writer thread owns
its own idempotent `acks=all` producer and reports each write's outcome from
the delivery report, on its own thread. A full local producer queue means
"not sent yet", never "sent".

A token bucket in front of the writer bounds the DLQ rate, so a flood of
poison records cannot flood the dead-letter topic; what happens without a
token is the operator's choice: `block` (back-pressure, nothing lost) or
`drop` (the record is counted, logged by its coordinates and let go).
"""

from __future__ import annotations

import enum
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from kafka_bridge import metrics
from kafka_bridge.deadline import Deadline
from kafka_bridge.errors import RecordError
from kafka_bridge.failover import DeliveryReport
from kafka_bridge.records import Header, Record
from kafka_bridge.token_bucket import TokenBucket
from kafka_bridge.version import __version__

log = structlog.get_logger(__name__)

HEADER_PREFIX = "kafka-bridge."
MAX_ERROR_MESSAGE_CHARS = 500
# How many times a record was replayed from the DLQ; kept among the
# original headers when a replayed record is dead-lettered again.
REPLAY_COUNT_HEADER = HEADER_PREFIX + "replay.count"

# How long the writer waits for work before serving delivery reports.
_IDLE_POLL_SECONDS = 0.1
# A write the broker refused is tried again after this pause.
_REWRITE_PAUSE_SECONDS = 1.0

# The producer settings that make an acknowledgement mean "stored".
_OWNED_PRODUCER_KEYS = {"acks": "all", "enable.idempotence": True}

Written = Callable[[bool], None]


class Submitted(enum.Enum):
    """What became of a letter handed to the writer."""

    QUEUED = "queued"
    DROPPED = "dropped"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A record that cannot be delivered, and why."""

    record: Record
    stage: str
    error_class: str
    error_message: str
    status: int | None = None
    endpoint: str | None = None
    attempts: int = 0
    first_failure_wall: float = field(default_factory=time.time)
    last_failure_wall: float = field(default_factory=time.time)

    @classmethod
    def of_error(cls, record: Record, error: RecordError) -> DeadLetter:
        """The letter of a record that could not be read, transformed or
        made to fit the contract."""
        return cls(
            record=record,
            stage=error.stage,
            error_class=type(error).__name__,
            error_message=str(error),
        )

    @classmethod
    def of_delivery(cls, record: Record, report: DeliveryReport) -> DeadLetter:
        """The letter of a record the API did not accept."""
        last = report.last
        now = time.time()
        return cls(
            record=record,
            stage="delivery",
            error_class="DeliveryFailed" if report.retryable else "Refused",
            error_message=report.reason,
            status=last.status if last else None,
            endpoint=last.endpoint.name if last else None,
            attempts=report.attempts,
            first_failure_wall=report.first_failure_wall or now,
            last_failure_wall=report.last_failure_wall or now,
        )

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """The original headers, then ours, all prefixed `kafka-bridge.`."""
        record = self.record
        ours: dict[str, Any] = {
            "original.topic": record.topic,
            "original.partition": record.partition,
            "original.offset": record.offset,
            "original.timestamp_ms": record.timestamp_ms,
            "error.stage": self.stage,
            "error.class": self.error_class,
            "error.message": self.error_message[:MAX_ERROR_MESSAGE_CHARS],
            "http.status": self.status,
            "http.endpoint": self.endpoint,
            "attempts": self.attempts,
            "failure.first": _iso(self.first_failure_wall),
            "failure.last": _iso(self.last_failure_wall),
            "bridge.version": __version__,
        }
        headers: list[tuple[str, str | bytes | None]] = list(record.headers)
        headers.extend(
            (HEADER_PREFIX + name, str(value).encode())
            for name, value in ours.items()
            if value is not None
        )
        return headers


@dataclass(slots=True)
class _Job:
    letter: DeadLetter
    written: Written


class DeadLetterWriter(threading.Thread):
    """Owns the DLQ producer; writes letters and reports each outcome.

    Workers call `submit` (which may block on the rate limiter); the thread
    produces and calls the job's `written(True)` on the broker's
    acknowledgement. On `stop`, it flushes within the time it is given and
    reports `written(False)` for whatever was not acknowledged.
    """

    def __init__(
        self,
        topic: str,
        producer_config: Mapping[str, Any],
        limiter: TokenBucket,
        *,
        drop_when_limited: bool,
    ) -> None:
        super().__init__(name="dlq-writer", daemon=True)
        self.topic = topic
        self._producer = Producer(
            {
                "linger.ms": 5,
                "logger": logging.getLogger("librdkafka"),
                **producer_config,
                **_OWNED_PRODUCER_KEYS,
            }
        )
        self._limiter = limiter
        self._drop_when_limited = drop_when_limited
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._unacknowledged: dict[int, _Job] = {}
        self._stopping = threading.Event()
        self._stop_deadline: Deadline | None = None
        self._finished = threading.Event()

    # -- called by workers -------------------------------------------------

    def submit(
        self, letter: DeadLetter, written: Written, cancel: threading.Event
    ) -> Submitted:
        """Hand a letter over, through the rate limiter.

        QUEUED: `written` will be called with the broker's verdict.
        DROPPED: the limiter shed it (`when_limited: drop`). CANCELLED:
        `cancel` was set while waiting for a token. In the last two cases
        `written` is never called.
        """
        if self._drop_when_limited:
            if not self._limiter.try_acquire():
                self._record_drop(letter.record)
                return Submitted.DROPPED
        else:
            started = time.monotonic()
            acquired = self._limiter.acquire(cancel)
            metrics.DLQ_LIMITER_BLOCKED.inc(time.monotonic() - started)
            if not acquired:
                return Submitted.CANCELLED

        self._jobs.put(_Job(letter, written))
        return Submitted.QUEUED

    # -- the thread ------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            self._write_next(timeout_seconds=_IDLE_POLL_SECONDS)
            self._producer.poll(0)
        self._drain()
        self._finished.set()

    def stop(self, timeout_seconds: float) -> bool:
        """Write what was submitted, within the time given; True if all of
        it was acknowledged."""
        self._stop_deadline = Deadline(timeout_seconds)
        self._stopping.set()
        self._finished.wait(timeout_seconds)
        return self._finished.is_set() and not self._unacknowledged

    def _write_next(self, timeout_seconds: float) -> None:
        try:
            job = self._jobs.get(timeout=timeout_seconds)
        except queue.Empty:
            return
        self._produce(job)

    def _produce(self, job: _Job) -> None:
        record = job.letter.record
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=record.key,
                    value=record.value,
                    headers=job.letter.headers(),
                    on_delivery=functools.partial(self._on_delivery, job),
                )
                self._unacknowledged[id(job)] = job
                return
            except BufferError:
                # The local queue is full: nothing was sent. Serve delivery
                # reports to make room, then try the same record again.
                self._producer.poll(_IDLE_POLL_SECONDS)
                if self._out_of_time():
                    job.written(False)
                    return
            except KafkaException as error:
                self._report_failure(job, error.args[0])
                return

    def _on_delivery(
        self, job: _Job, error: KafkaError | None, message: object
    ) -> None:
        self._unacknowledged.pop(id(job), None)
        if error is None:
            metrics.DEAD_LETTERED.labels(
                job.letter.record.topic, job.letter.stage
            ).inc()
            job.written(True)
            return
        self._report_failure(job, error)

    def _report_failure(self, job: _Job, error: KafkaError) -> None:
        """A write the broker refused: try again, unless stopping."""
        record = job.letter.record
        log.error(
            "dead_letter_write_failed",
            dlq_topic=self.topic,
            error=error.str(),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        if self._stopping.is_set() or error.fatal():
            job.written(False)
            return
        retry = threading.Timer(_REWRITE_PAUSE_SECONDS, self._jobs.put, (job,))
        retry.daemon = True
        retry.start()

    def _drain(self) -> None:
        """On stop: write what is queued, flush, give up on the rest."""
        while not self._out_of_time():
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._produce(job)

        remaining = self._stop_deadline.remaining() if self._stop_deadline else 0
        self._producer.flush(remaining)
        for job in list(self._unacknowledged.values()):
            job.written(False)
        self._unacknowledged.clear()
        while True:
            try:
                self._jobs.get_nowait().written(False)
            except queue.Empty:
                break

    def _out_of_time(self) -> bool:
        return self._stop_deadline is not None and self._stop_deadline.expired

    def _record_drop(self, record: Record) -> None:
        metrics.DLQ_LIMITER_DROPS.labels(record.topic).inc()
        log.warning(
            "dead_letter_dropped",
            reason="dlq rate limit",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )


def is_bridge_header(name: str) -> bool:
    """True for a header the bridge adds (`kafka-bridge.*`), not the
    producer of the record."""
    return name.startswith(HEADER_PREFIX)


def without_bridge_headers(
    headers: Iterable[tuple[str, bytes | None]],
) -> tuple[Header, ...]:
    """The headers a record had before the bridge added its own, in order."""
    return tuple(
        (name, value) for name, value in headers if not is_bridge_header(name)
    )


def _iso(wall_seconds: float) -> str:
    moment = datetime.fromtimestamp(wall_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds")
