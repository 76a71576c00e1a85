"""`kafka-bridge dlq-replay`: dead letters put back to work, safely.

Once the cause of a failure is fixed (a bug in the API, an expired
credential, a schema change), the letters written meanwhile are read from
the dead-letter topic and sent out again, through the delivery path or to
a topic (see `replay_targets`). The replay is made safe to stop and to run
again:

- It reads the DLQ under a consumer group of its own and commits a
  letter's offset only once the record it holds was delivered or
  dead-lettered again, so an interrupted replay resumes at the first
  letter whose outcome it did not know.
- It reads each partition up to the end offset it had when the replay
  started: letters written during the run, its own included, wait for the
  next run. A replay never chases its own failures.
- Every replayed record carries its replay count; a letter whose record
  was replayed `dlq.replay.max_count` times is skipped unless forced, so a
  record that keeps failing cannot go round forever.

Letters the filters pass over are committed too: a group remembers how far
it read, not what it chose. Another selection among letters already read
needs `--from-beginning` or another `--group`.

Letters are replayed one at a time, in offset order within a partition, at
most `rate_per_second` of them a second.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kafka_bridge.bridge import consumer_config
from kafka_bridge.config import Settings
from kafka_bridge.errors import BridgeError, ConfigError
from kafka_bridge.records import KafkaMessage
from kafka_bridge.replay_filters import LetterFilter
from kafka_bridge.replay_progress import ReplayProgress
from kafka_bridge.replay_summary import ReplayTally
from kafka_bridge.replay_targets import (
    ApiTarget,
    Outcome,
    ReplayTarget,
    TopicTarget,
    check_topic_allowed,
    replay_topic,
)
from kafka_bridge.stored_letters import NotALetter, StoredLetter
from kafka_bridge.token_bucket import TokenBucket

log = structlog.get_logger(__name__)

GROUP_SUFFIX = "-dlq-replay"

_BATCH_SIZE = 100
_POLL_SECONDS = 0.5
_METADATA_TIMEOUT_SECONDS = 10.0
# Letters passed over are committed in batches: after a crash, reading
# them again costs no more than a filter check each.
_PASS_OVER_COMMIT_EVERY = 500


class ReplayError(BridgeError):
    """The replay cannot go on: the DLQ cannot be read or a commit failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayOptions:
    """What one run replays, where to, and how.

    `rate_per_second` bounds the records sent out. `to_topic` False sends
    records to the API. `topic` (with `to_topic`)
    replaces each record's original topic. `group_id` None means the
    configured replay group. `limit` bounds the letters replayed.
    """

    rate_per_second: float
    to_topic: bool = False
    topic: str | None = None
    selection: LetterFilter = field(default_factory=LetterFilter)
    limit: int | None = None
    dry_run: bool = False
    force: bool = False
    group_id: str | None = None
    from_beginning: bool = False

    def target_name(self) -> str:
        """Where records go: `api`, `topic NAME` or `original topics`."""
        if not self.to_topic:
            return "api"
        return f"topic {self.topic}" if self.topic else "original topics"


def replay_group_id(settings: Settings, override: str | None = None) -> str:
    """The replay's consumer group: `override`, `dlq.replay.group_id`, or
    `<kafka.group_id>-dlq-replay`."""
    return (
        override
        or settings.dlq.replay.group_id
        or settings.kafka.group_id + GROUP_SUFFIX
    )


def check_options(settings: Settings, options: ReplayOptions) -> None:
    """ConfigError for a replay that cannot be run, before any connection."""
    if settings.dlq.topic is None:
        raise ConfigError.single(
            "dlq.topic",
            rule="required-for-replay",
            value="null",
            message="dlq-replay reads the dead-letter topic, and none is set",
            fix="set dlq.topic to the topic the bridge dead-letters into",
        )
    _check_group(settings, replay_group_id(settings, options.group_id))
    _check_pace(options)
    if options.to_topic and options.topic is not None:
        check_topic_allowed(settings, options.topic, given=True)


def _check_group(settings: Settings, group: str) -> None:
    if group != settings.kafka.group_id:
        return
    raise ConfigError.single(
        "--group",
        rule="separate-replay-group",
        value=group,
        message="is kafka.group_id, whose members would refuse the "
        "replay's commits",
        fix=f"use a group of its own, such as {group}{GROUP_SUFFIX}",
    )


def _check_pace(options: ReplayOptions) -> None:
    if options.limit is not None and options.limit < 1:
        raise ConfigError.single(
            "--limit",
            rule="minimum",
            value=str(options.limit),
            message="must be >= 1",
            fix="give the most letters to replay, or leave --limit out",
        )
    if not options.rate_per_second > 0:
        raise ConfigError.single(
            "--rate",
            rule="exclusiveMinimum",
            value=str(options.rate_per_second),
            message="must be > 0",
            fix="give records per second, e.g. --rate 5",
        )


@dataclass(frozen=True, slots=True)
class _Span:
    """The letters of one DLQ partition this run reads: [start, end)."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


class Replay:
    """One run of `dlq-replay`: `run()` it once; `tally` has the counts,
    also after a run that raised."""

    def __init__(
        self,
        settings: Settings,
        options: ReplayOptions,
        *,
        stop: threading.Event | None = None,
        progress_stream: TextIO | None = None,
    ) -> None:
        check_options(settings, options)
        assert settings.dlq.topic is not None
        self.dlq_topic = settings.dlq.topic
        self.group_id = replay_group_id(settings, options.group_id)
        self.target_name = options.target_name()
        self.tally = ReplayTally()
        self._settings = settings
        self._options = options
        self._stop = stop or threading.Event()
        self._progress_stream = progress_stream or sys.stderr
        self._limiter = TokenBucket(options.rate_per_second, capacity=1)
        self._user = _user()

    def run(self) -> ReplayTally:
        """Replay the selected letters up to the end offsets at start.

        The audit events bracket the run, the second one also when it
        raised.
        """
        started = datetime.now(UTC)
        log.info("dlq_replay_started", **self._audit())
        outcome = "error"
        try:
            self._replay()
            outcome = "complete" if self.tally.complete else "incomplete"
        finally:
            log.info(
                "dlq_replay_finished",
                **self._audit(),
                started=started.isoformat(),
                outcome=outcome,
                **self.tally.counts(),
            )
        return self.tally

    def _replay(self) -> None:
        consumer = Consumer(self._consumer_config())
        commits = _Commits(
            consumer, self.dlq_topic, enabled=not self._options.dry_run
        )
        target: ReplayTarget | None = None
        try:
            spans = self._plan(consumer)
            self.tally.letters_to_read = sum(span.size for span in spans)
            if not self._options.dry_run:
                target = self._target()
                target.start()
            self._read(consumer, spans, target, commits)
        finally:
            self._close(consumer, commits, target)

    # -- setting up ------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        return {
            **consumer_config(self._settings),
            "group.id": self.group_id,
            "client.id": f"kafka-bridge-dlq-replay-{socket.gethostname()}",
            # Each partition says when it has nothing more, so that a
            # partition whose last letters were deleted still ends.
            "enable.partition.eof": True,
        }

    def _plan(self, consumer: Consumer) -> list[_Span]:
        """From the committed offset (or the start) to the end offset, per
        partition, as they are now."""
        partitions = self._dlq_partitions(consumer)
        committed: dict[int, int] = {}
        if not self._options.from_beginning:
            found = consumer.committed(
                [TopicPartition(self.dlq_topic, p) for p in partitions],
                timeout=_METADATA_TIMEOUT_SECONDS,
            )
            committed = {tp.partition: tp.offset for tp in found}

        spans = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.dlq_topic, partition),
                timeout=_METADATA_TIMEOUT_SECONDS,
                cached=False,
            )
            # No commit yet reads as a negative offset: start at the low mark.
            start = max(low, committed.get(partition, low))
            spans.append(_Span(partition, start, high))
        log.info(
            "dlq_replay_planned",
            dlq_topic=self.dlq_topic,
            partitions=len(spans),
            letters_to_read=sum(span.size for span in spans),
        )
        return spans

    def _dlq_partitions(self, consumer: Consumer) -> list[int]:
        metadata = consumer.list_topics(
            self.dlq_topic, timeout=_METADATA_TIMEOUT_SECONDS
        )
        topic = metadata.topics.get(self.dlq_topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None else "not found"
            raise ReplayError(
                f"the dead-letter topic {self.dlq_topic} cannot be read: "
                f"{reason}"
            )
        return sorted(topic.partitions)

    def _target(self) -> ReplayTarget:
        if self._options.to_topic:
            return TopicTarget(self._settings, self._options.topic)
        return ApiTarget(self._settings, self.dlq_topic)

    # -- reading ---------------------------------------------------------

    def _read(
        self,
        consumer: Consumer,
        spans: list[_Span],
        target: ReplayTarget | None,
        commits: _Commits,
    ) -> None:
        pending = {span.partition: span for span in spans if span.size}
        if not pending:
            return
        consumer.assign(
            [
                TopicPartition(self.dlq_topic, span.partition, span.start)
                for span in pending.values()
            ]
        )
        progress = ReplayProgress(
            self.tally.letters_to_read,
            self._progress_stream,
            verb="selected" if self._options.dry_run else "replayed",
        )
        try:
            while pending:
                messages = consumer.consume(_BATCH_SIZE, _POLL_SECONDS)
                if not messages and self._stop.is_set():
                    self.tally.interrupted = True
                    return
                for message in messages:
                    if not self._take(message, pending, target, commits):
                        return
                    progress.update(
                        self.tally.letters_read, self.tally.replayed
                    )
        finally:
            progress.finish(self.tally.letters_read, self.tally.replayed)

    def _take(
        self,
        message: Any,
        pending: dict[int, _Span],
        target: ReplayTarget | None,
        commits: _Commits,
    ) -> bool:
        """Handle one consumed message; False when the run must end."""
        error: KafkaError | None = message.error()
        if error is not None:
            _check_consume_error(error)
            if error.code() == KafkaError._PARTITION_EOF:
                pending.pop(message.partition(), None)
            return True

        span = pending.get(message.partition())
        if span is None:
            return True
        if message.offset() >= span.end:
            del pending[span.partition]
            return True

        if self._stop.is_set():
            self.tally.interrupted = True
            return False
        offset: int = message.offset()
        go_on = self._handle(message, target, commits, (span.partition, offset))
        if go_on and offset + 1 >= span.end:
            del pending[span.partition]
        return go_on

    def _handle(
        self,
        message: KafkaMessage,
        target: ReplayTarget | None,
        commits: _Commits,
        position: tuple[int, int],
    ) -> bool:
        letter = self._letter(message)
        if letter is None or not self._wanted(letter):
            self.tally.letters_read += 1
            commits.pass_over(*position)
            return True

        if self._limit_reached():
            self.tally.stopped_at_limit = True
            return False
        if self._options.to_topic:
            replay_topic(self._settings, letter, self._options.topic)
        if target is None:
            self.tally.letters_read += 1
            self.tally.count_replayed(letter)
            return True
        return self._send(letter, target, commits)

    def _limit_reached(self) -> bool:
        limit = self._options.limit
        return limit is not None and self.tally.replayed >= limit

    def _letter(self, message: KafkaMessage) -> StoredLetter | None:
        try:
            return StoredLetter.from_message(message)
        except NotALetter as error:
            self.tally.not_letters += 1
            log.warning(
                "dlq_message_not_a_letter",
                reason=str(error),
                dlq_partition=message.partition(),
                dlq_offset=message.offset(),
            )
            return None

    def _wanted(self, letter: StoredLetter) -> bool:
        """Selected by the filters and not replayed too often; counts the
        reason when not."""
        if not self._options.selection.matches(letter):
            self.tally.skipped_by_filter += 1
            return False
        maximum = self._settings.dlq.replay.max_count
        if letter.replay_count >= maximum and not self._options.force:
            self.tally.skipped_by_max_count += 1
            log.info(
                "letter_skipped_max_count", max_count=maximum, **_where(letter)
            )
            return False
        return True

    def _send(
        self, letter: StoredLetter, target: ReplayTarget, commits: _Commits
    ) -> bool:
        if not self._limiter.acquire(self._stop):
            self.tally.interrupted = True
            return False
        outcome = target.replay(letter, self._stop)
        if outcome is Outcome.CANCELLED:
            self.tally.interrupted = True
            return False

        self.tally.letters_read += 1
        self.tally.count_replayed(letter)
        if outcome is Outcome.FAILED:
            self.tally.failed += 1
            log.error("letter_replay_failed", **_where(letter))
            return False
        if outcome is Outcome.DEAD_LETTERED:
            self.tally.dead_lettered += 1
            log.warning("letter_dead_lettered_again", **_where(letter))
        else:
            self.tally.delivered += 1
            log.debug("letter_replayed", **_where(letter))
        commits.done(letter.dlq_partition, letter.dlq_offset)
        return True

    # -- ending ----------------------------------------------------------

    def _close(
        self, consumer: Consumer, commits: _Commits, target: ReplayTarget | None
    ) -> None:
        """Let the target finish, commit what was passed over, leave."""
        seconds = self._settings.pipeline.shutdown_deadline_seconds
        if target is not None:
            target.close(seconds)
        try:
            commits.commit()
        except (KafkaException, ReplayError) as error:
            # Only letters passed over can be left: they are read again
            # and passed over again next time.
            log.warning("dlq_replay_commit_failed", error=str(error))
        consumer.close()

    def _audit(self) -> dict[str, object]:
        options = self._options
        return {
            "user": self._user,
            "dlq_topic": self.dlq_topic,
            "group": self.group_id,
            "target": options.target_name(),
            "dry_run": options.dry_run,
            "force": options.force,
            "from_beginning": options.from_beginning,
            "limit": options.limit,
            "rate_per_second": options.rate_per_second,
            "filters": options.selection.describe(),
        }


class _Commits:
    """The offsets to commit per DLQ partition: at once after a replayed
    letter, in batches for letters passed over; never in a dry run."""

    def __init__(
        self, consumer: Consumer, topic: str, *, enabled: bool
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._enabled = enabled
        self._next: dict[int, int] = {}
        self._passed_over = 0

    def pass_over(self, partition: int, offset: int) -> None:
        self._next[partition] = offset + 1
        self._passed_over += 1
        if self._passed_over >= _PASS_OVER_COMMIT_EVERY:
            self.commit()

    def done(self, partition: int, offset: int) -> None:
        self._next[partition] = offset + 1
        self.commit()

    def commit(self) -> None:
        """Commit synchronously; ReplayError naming a partition refused."""
        if not self._enabled or not self._next:
            return
        offsets = [
            TopicPartition(self._topic, partition, offset)
            for partition, offset in self._next.items()
        ]
        result = self._consumer.commit(offsets=offsets, asynchronous=False)
        refused = [tp for tp in result or [] if tp.error is not None]
        if refused:
            raise ReplayError(
                f"the commit of {self._topic}[{refused[0].partition}] was "
                f"refused: {refused[0].error}"
            )
        self._next.clear()
        self._passed_over = 0


def _check_consume_error(error: KafkaError) -> None:
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise KafkaException(error)
    log.warning("consume_error", error=error.str(), code=error.name())


def _where(letter: StoredLetter) -> dict[str, object]:
    record = letter.original
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "dlq_partition": letter.dlq_partition,
        "dlq_offset": letter.dlq_offset,
        "replay_count": letter.replay_count,
    }


def _user() -> str:
    """Who runs the replay, for the audit line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container may run under a user id the system has no name for.
        return f"uid {os.getuid()}"
