"""The poll thread: the only thread that touches the Kafka consumer.

It consumes in batches and hands records to the workers through a bounded
queue, taking from librdkafka only as many records as the queue has room
for: what is not taken stays in librdkafka's prefetch, which stops fetching
when that is full. When the queue is full it does not stop polling, which
would let `max.poll.interval.ms` lapse and cost a rebalance: it waits for a
worker to make room, takes one record a turn (held back with the overflow of
the last batch), and if the queue stays full for a second it pauses its
partitions and keeps polling (which then returns nothing for them) until the
queue drains below its low-water mark. Pausing is kept for a queue that
stays full because librdkafka throws away what it prefetched for a paused
partition, and fetching it again after the resume starves the workers.

It also commits: after every turn it commits the offsets the offset tracker
says are safe, and on revocation and shutdown it commits synchronously.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from kafka_bridge import metrics
from kafka_bridge.deadline import Deadline
from kafka_bridge.lanes import Lanes
from kafka_bridge.offsets import OffsetTracker, TopicPartitionKey
from kafka_bridge.records import Record

log = structlog.get_logger(__name__)

_REBALANCE_ERRORS = (
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
)
_COMMIT_RETRY_FRACTION = 0.5
_COMMIT_RETRY_POLL_SECONDS = 0.1
# A queue full for this long means the API is not keeping up: pause. A
# resume took 0.1 to 0.6 s to bring records again on a local broker, so a
# queue that fills and drains again within a second is better left alone.
_PAUSE_AFTER_FULL_SECONDS = 1.0


class Poller(threading.Thread):
    """Owns the consumer: consume, hand off, pause, resume, commit, close.

    Life cycle: `start()`; `stop_fetching()` once the bridge is stopping,
    after which the thread keeps serving callbacks and commits but hands
    out nothing new; `finish(timeout)` commits a last time and closes the
    consumer; `join()`.
    """

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topics: Sequence[str],
        lanes: Lanes,
        tracker: OffsetTracker,
        *,
        batch_size: int,
        poll_timeout_seconds: float,
        resume_at_fraction: float,
        revoke_timeout_seconds: float,
        on_failure: Callable[[], None],
    ) -> None:
        super().__init__(name="poller", daemon=True)
        self._consumer = Consumer(
            {
                **consumer_config,
                "on_commit": self._on_commit,
                "error_cb": self._on_client_error,
                "stats_cb": self._on_statistics,
            }
        )
        self._topics = list(topics)
        self._lanes = lanes
        self._tracker = tracker
        self._batch_size = batch_size
        self._poll_timeout_seconds = poll_timeout_seconds
        self._resume_below = max(1, int(lanes.capacity * resume_at_fraction))
        self._revoke_timeout_seconds = revoke_timeout_seconds
        self._on_failure = on_failure

        self._overflow: list[Record] = []
        self._full_since: float | None = None
        self._assigned: list[TopicPartition] = []
        self._paused = False
        self._repause = False
        self._fetching = True
        self._closing = threading.Event()
        self._closed = threading.Event()
        self._retry_commits_until = Deadline(0)
        self.assigned = threading.Event()
        self.failure: BaseException | None = None

    # -- the thread ----------------------------------------------------

    def run(self) -> None:
        try:
            self._consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._closing.is_set():
                self._poll_once()
            self._close_consumer()
        except BaseException as error:
            self.failure = error
            log.error("poller_failed", exc_info=True)
            self._tracker.abandon()
        finally:
            self._closed.set()
            if self.failure is not None:
                self._on_failure()

    def stop_fetching(self) -> None:
        """Hand out no more records; keep polling and committing."""
        self._fetching = False

    def holding(self) -> int:
        """Records consumed but not yet in a lane; 0 once the thread ended,
        as nothing would hand them out any more."""
        return len(self._overflow) if self.is_alive() else 0

    def finish(self, timeout_seconds: float) -> bool:
        """Commit what is done, close the consumer; False if that hung.

        A last commit refused because the group is rebalancing is tried
        again for up to half the time, the rest being kept for the close.
        """
        self._retry_commits_until = Deadline(
            timeout_seconds * _COMMIT_RETRY_FRACTION
        )
        self._fetching = False
        self._closing.set()
        return self._closed.wait(timeout_seconds)

    # -- one turn of the loop -----------------------------------------

    def _poll_once(self) -> None:
        self._wait_for_room()
        self._pause_or_resume()

        records = self._records_of(self._next_messages(self._intake()))
        self._tracker.track_all(
            [(record.topic, record.partition, record.offset)
             for record in records]
        )
        self._hand_off(records)

        self._commit(asynchronous=True)

    def _wait_for_room(self) -> None:
        """Hand held-back records on; while the lanes are full, wait for
        a worker to make room rather than take more from librdkafka."""
        self._hand_off_overflow()
        if self._overflow and not self._paused:
            self._lanes.wait_for_room(
                self._overflow[0], self._poll_timeout_seconds
            )
            self._hand_off_overflow()

    def _intake(self) -> int:
        """How many messages to take: what the lanes have room for, up to
        a batch. While they are full, one: polling goes on, so the group
        keeps the consumer and its callbacks are served."""
        if self._overflow:
            return 1
        return max(1, min(self._batch_size, self._lanes.room()))

    def _next_messages(self, wanted: int) -> list[Any]:
        """Up to `wanted` messages, without waiting for that many.

        `consume()` waits until it has the whole batch or the timeout is
        up, so at a low rate every record waited most of the timeout.
        Instead: wait for one message, then take whatever else librdkafka
        already holds, up to the batch, without waiting.
        """
        first = self._consumer.poll(self._poll_timeout_seconds)
        if first is None:
            return []
        if wanted == 1:
            return [first]
        return [
            first,
            *self._consumer.consume(num_messages=wanted - 1, timeout=0),
        ]

    def _records_of(self, messages: list[Any]) -> list[Record]:
        """The records among the messages; errors go to their handler.

        Once the bridge is stopping, none: records not tracked are never
        committed, and the next owner of the partition reads them again.
        """
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_consume_error(error)
            elif self._fetching:
                records.append(Record.from_message(message))
        return records

    def _hand_off(self, records: list[Record]) -> None:
        """To the records' lanes; what does not fit is held back."""
        for topic, count in Counter(r.topic for r in records).items():
            metrics.child(metrics.CONSUMED, topic).inc(count)
        if self._overflow:
            self._overflow += records
            return
        queued = self._lanes.put(records)
        self._overflow = records[queued:]

    def _hand_off_overflow(self) -> None:
        if self._overflow:
            queued = self._lanes.put(self._overflow)
            self._overflow = self._overflow[queued:]

    def _pause_or_resume(self) -> None:
        self._note_full()
        if not self._assigned:
            return
        if self._paused and self._repause:
            # Partitions assigned while paused start out fetching.
            self._consumer.pause(self._assigned)
            self._repause = False
        if self._stayed_full() and not self._paused:
            self._consumer.pause(self._assigned)
            self._paused = True
            metrics.PAUSES.inc()
            log.info("partitions_paused", count=len(self._assigned))
        elif self._paused and self._has_drained():
            self._consumer.resume(self._assigned)
            self._paused = False
            log.info("partitions_resumed", count=len(self._assigned))
        metrics.PAUSED_PARTITIONS.set(
            len(self._assigned) if self._paused else 0
        )

    def _note_full(self) -> None:
        """Note since when records have been held back."""
        if not self._overflow:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = time.monotonic()

    def _stayed_full(self) -> bool:
        return (
            self._full_since is not None
            and time.monotonic() - self._full_since
            >= _PAUSE_AFTER_FULL_SECONDS
        )

    def _has_drained(self) -> bool:
        return not self._overflow and (
            self._lanes.qsize() < self._resume_below
        )

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consume_error", error=error.str(), code=error.name())

    # -- commits --------------------------------------------------------

    def _commit(self, *, asynchronous: bool) -> KafkaError | None:
        """Asynchronously, what moved since the last commit; synchronously
        (before partitions go), every position, in case an asynchronous
        commit still under way fails after the partitions are forgotten.

        Returns the error of a synchronous commit that failed.
        """
        offsets = (
            self._tracker.committable()
            if asynchronous
            else self._tracker.positions()
        )
        if not offsets:
            return None

        partitions = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in offsets.items()
        ]
        error: KafkaError | None = None
        try:
            self._consumer.store_offsets(offsets=partitions)
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                result = self._consumer.commit(
                    offsets=partitions, asynchronous=False
                )
                error = self._check_sync_commit(result, offsets)
        except KafkaException as exception:
            metrics.COMMITS.labels("failure").inc()
            log.warning("commit_failed", error=str(exception))
            return exception.args[0] if exception.args else None

        # An asynchronous commit is reported to on_commit; marking it
        # now only avoids sending the same offsets again every turn.
        self._tracker.mark_committed(offsets)
        return error

    def _check_sync_commit(
        self,
        result: list[TopicPartition],
        offsets: dict[TopicPartitionKey, int],
    ) -> KafkaError | None:
        failed = [tp for tp in result if tp.error is not None]
        for tp in failed:
            offsets.pop((tp.topic, tp.partition), None)
            log.warning(
                "commit_failed",
                topic=tp.topic,
                partition=tp.partition,
                error=str(tp.error),
            )
        metrics.COMMITS.labels("failure" if failed else "success").inc()
        return failed[0].error if failed else None

    def _on_commit(
        self, error: KafkaError | None, partitions: list[TopicPartition]
    ) -> None:
        """librdkafka's report on an asynchronous commit."""
        if error is None:
            metrics.COMMITS.labels("success").inc()
            return
        metrics.COMMITS.labels("failure").inc()
        log.warning("commit_failed", error=error.str())
        self._tracker.forget_commits(
            [(tp.topic, tp.partition) for tp in partitions]
        )

    def _on_statistics(self, statistics_json: str) -> None:
        """Consumer lag and committed offsets from librdkafka's statistics."""
        statistics = json.loads(statistics_json)
        for topic, topic_stats in statistics.get("topics", {}).items():
            for partition, stats in topic_stats.get("partitions", {}).items():
                lag = stats.get("consumer_lag", -1)
                if partition == "-1" or lag < 0:
                    continue
                metrics.CONSUMER_LAG.labels(topic, partition).set(lag)
                committed = stats.get("committed_offset", -1)
                if committed >= 0:
                    metrics.COMMITTED_OFFSET.labels(topic, partition).set(
                        committed
                    )

    def _on_client_error(self, error: KafkaError) -> None:
        """Errors librdkafka reports outside consume(): brokers down,
        authentication; it retries them itself unless they are fatal."""
        if error.fatal():
            log.error("kafka_fatal_error", error=error.str())
            self.failure = KafkaException(error)
            self._closing.set()
            return
        # librdkafka's own log already reports each failed connection.
        level = (
            logging.DEBUG
            if error.code() == KafkaError._TRANSPORT
            else logging.WARNING
        )
        log.log(level, "kafka_error", error=error.str(), code=error.name())

    # -- rebalances -----------------------------------------------------

    def _on_assign(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> None:
        self._assigned = self._assigned + list(partitions)
        self._repause = self._paused
        self.assigned.set()
        log.info("partitions_assigned", partitions=_names(partitions))

    def _on_revoke(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> None:
        """Finish or abandon the partitions' records, then commit them.

        With `ordering: partition` a partition's records wait in one lane
        in offset order: skipping the queued ones commits below them and
        above everything delivered, so they are skipped, and the new owner
        delivers them. With `key` or `none` they sit in several lanes, and
        later ones may be delivered before earlier ones: skipping would
        commit below records already delivered, and the new owner would
        deliver those again. So the workers finish them first.

        Either way, what is still being delivered when the revoke timeout
        is up is abandoned uncommitted, for the new owner to deliver.
        """
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = Deadline(self._revoke_timeout_seconds)
        self._drop_overflow(keys)
        if self._lanes.ordering != "partition":
            self._tracker.wait_settled(keys, deadline.remaining())
        self._tracker.abandon(keys)
        if not self._tracker.wait_idle(keys, deadline.remaining()):
            log.warning(
                "revoke_abandoned_records", partitions=_names(partitions)
            )

        self._commit(asynchronous=False)
        self._tracker.forget(keys)
        self._unassign(keys)
        metrics.REBALANCES.inc()
        log.info("partitions_revoked", partitions=_names(partitions))

    def _on_lost(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> None:
        """Lost partitions belong to someone else already: no commit."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._drop_overflow(keys)
        self._tracker.forget(keys)
        self._unassign(keys)
        metrics.REBALANCES.inc()
        log.warning("partitions_lost", partitions=_names(partitions))

    def _unassign(self, keys: list[TopicPartitionKey]) -> None:
        # Another member reports these partitions from now on. In
        # multiprocess mode a series cannot be removed; the newest value,
        # the new owner's, is the one shown.
        if not metrics.MULTIPROCESS:
            self._forget_partition_gauges(keys)
        self._assigned = [
            tp for tp in self._assigned if (tp.topic, tp.partition) not in keys
        ]
        if not self._assigned:
            self._paused = False

    def _forget_partition_gauges(self, keys: list[TopicPartitionKey]) -> None:
        for topic, partition in keys:
            for gauge in (metrics.CONSUMER_LAG, metrics.COMMITTED_OFFSET):
                with contextlib.suppress(KeyError):
                    gauge.remove(topic, str(partition))

    def _drop_overflow(self, keys: list[TopicPartitionKey]) -> None:
        """Forget the held-back records of these partitions: the next
        owner reads them again."""
        kept: list[Record] = []
        dropped: Counter[TopicPartitionKey] = Counter()
        for record in self._overflow:
            key = (record.topic, record.partition)
            if key in keys:
                dropped[key] += 1
            else:
                kept.append(record)
        self._overflow = kept
        for key, count in dropped.items():
            self._tracker.release(key, count)

    # -- closing --------------------------------------------------------

    def _close_consumer(self) -> None:
        """Commit what is done, then leave the group.

        Members that stop together, as the processes of one supervisor do,
        leave one after the other: each leaving starts a rebalance, and the
        broker refuses the others' commits until it is over. Polling lets
        the rebalance finish (records fetched meanwhile are not handed
        out); the commit is then accepted in the new generation.
        """
        error = self._commit(asynchronous=False)
        while _rebalancing(error) and not self._retry_commits_until.expired:
            self._consumer.consume(
                num_messages=self._batch_size,
                timeout=_COMMIT_RETRY_POLL_SECONDS,
            )
            error = self._commit(asynchronous=False)
        started = time.monotonic()
        self._consumer.close()
        log.info(
            "consumer_closed",
            seconds=round(time.monotonic() - started, 3),
        )


def _rebalancing(error: KafkaError | None) -> bool:
    """The group moved on while the commit was made: worth another try."""
    return error is not None and error.code() in _REBALANCE_ERRORS


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}/{tp.partition}" for tp in partitions]

