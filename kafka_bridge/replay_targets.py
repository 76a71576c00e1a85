"""Where replayed records go: through the delivery path, or to a topic.

`--to-api` sends a record the way the daemon does (transform, contract,
retries, breakers, failover) with the idempotency key of its original
coordinates, so an API that did accept it once can tell; a record that
fails again is dead-lettered again, its replay count one higher.
`--to-topic` publishes the record for the running bridges to consume
again, into a topic the configuration allows.

A replay reports its outcome only once it is final: delivered (the API
answered 2xx, or the target topic's broker acknowledged the record),
dead-lettered again (the DLQ broker acknowledged the letter), failed, or
cancelled by a stop before either was known.
"""

from __future__ import annotations

import enum
import logging
import re
import socket
import threading
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from kafka_bridge.bridge import contract, failover_delivery, producer_config
from kafka_bridge.config import Settings
from kafka_bridge.dead_letters import DeadLetter, DeadLetterWriter, Submitted
from kafka_bridge.deadline import Deadline
from kafka_bridge.delivery import HttpSender
from kafka_bridge.errors import ConfigError, RecordError
from kafka_bridge.stored_letters import StoredLetter
from kafka_bridge.token_bucket import TokenBucket
from kafka_bridge.transforms import load_transform

log = structlog.get_logger(__name__)

# How often a wait for an acknowledgement looks up to see a stop.
_ACK_POLL_SECONDS = 0.1
_METADATA_TIMEOUT_SECONDS = 10.0

# An acknowledgement then means "stored", as for dead letters.
_ACKNOWLEDGED_PRODUCER_KEYS = {"acks": "all", "enable.idempotence": True}


class Outcome(enum.Enum):
    """How replaying one letter ended."""

    DELIVERED = "delivered"
    DEAD_LETTERED = "dead-lettered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ReplayTarget(Protocol):
    """Where replayed records go; `start` before, `close` after."""

    def start(self) -> None:
        """Get ready; ConfigError if the target cannot be used."""

    def replay(self, letter: StoredLetter, stop: threading.Event) -> Outcome:
        """Send the letter's record; return once the outcome is final."""

    def close(self, timeout_seconds: float) -> None:
        """Finish what is in flight within the time given; let go."""


def replay_topic(
    settings: Settings, letter: StoredLetter, override: str | None
) -> str:
    """The topic `--to-topic` writes the letter's record to: `override`,
    or the record's original topic; ConfigError unless it is allowed."""
    topic = override or letter.original.topic
    check_topic_allowed(settings, topic, given=override is not None)
    return topic


def check_topic_allowed(settings: Settings, topic: str, *, given: bool) -> None:
    """ConfigError unless `topic` is in kafka.topics (or matched by one of
    its patterns) or in dlq.replay.allowed_topics, and is not dlq.topic.

    `given` says whether the topic came from --topic or from a letter.
    """
    if topic != settings.dlq.topic and (
        topic in settings.dlq.replay.allowed_topics
        or _consumed(settings.kafka.topics, topic)
    ):
        return

    source = "--topic" if given else "the letter's original topic"
    if topic == settings.dlq.topic:
        fix = "replay into the topics the letters came from, or another one"
    else:
        fix = (
            f"add {topic} to dlq.replay.allowed_topics if replayed records "
            "may be written there, or name an allowed topic with --topic"
        )
    raise ConfigError.single(
        "dlq.replay.allowed_topics",
        rule="allowed-replay-topic",
        value=topic,
        message=f"{source} is not a topic dlq-replay --to-topic may write to",
        fix=fix,
    )


def _consumed(subscriptions: tuple[str, ...], topic: str) -> bool:
    """True when the bridge consumes `topic`: named, or matched by a `^`
    pattern, which librdkafka reads as a regular expression."""
    for subscription in subscriptions:
        if subscription == topic:
            return True
        if subscription.startswith("^") and _matches(subscription, topic):
            return True
    return False


def _matches(pattern: str, topic: str) -> bool:
    try:
        return re.search(pattern, topic) is not None
    except re.error:
        return False


class ApiTarget:
    """Delivers replayed records as the daemon does; dead-letters again
    what fails, behind the DLQ rate limit, never dropping."""

    def __init__(self, settings: Settings, dlq_topic: str) -> None:
        self._sender = HttpSender(settings.api, pool_size=1)
        self._delivery = failover_delivery(settings, self._sender)
        self._transform = load_transform(settings.pipeline.transform)
        self._contract = contract(settings)
        self._dead_letters = DeadLetterWriter(
            dlq_topic,
            producer_config(settings),
            TokenBucket(settings.dlq.rate_per_second, settings.dlq.burst),
            drop_when_limited=False,
        )
        self._stop_seconds = settings.pipeline.shutdown_deadline_seconds

    def start(self) -> None:
        """Start the dead-letter writer."""
        self._dead_letters.start()

    def replay(self, letter: StoredLetter, stop: threading.Event) -> Outcome:
        """Transform, check, deliver; dead-letter again on failure."""
        record = letter.replayed_record()
        try:
            body = self._transform(record)
            if self._contract is not None:
                self._contract.check(body)
        except RecordError as error:
            return self._dead_letter(DeadLetter.of_error(record, error), stop)

        report = self._delivery.deliver(body, record.coordinates, stop)
        if report.delivered:
            return Outcome.DELIVERED
        if report.cancelled:
            return Outcome.CANCELLED
        return self._dead_letter(DeadLetter.of_delivery(record, report), stop)

    def close(self, timeout_seconds: float) -> None:
        """Flush the dead-letter writer, close the HTTP connections."""
        if self._dead_letters.is_alive():
            self._dead_letters.stop(timeout_seconds)
        self._sender.close()

    def _dead_letter(
        self, letter: DeadLetter, stop: threading.Event
    ) -> Outcome:
        """Write the letter and wait for the broker's verdict.

        On a stop, the writer is stopped too: it flushes within the
        shutdown deadline and reports what became of the letter.
        """
        verdicts: list[bool] = []
        reported = threading.Event()

        def written(acknowledged: bool) -> None:
            verdicts.append(acknowledged)
            reported.set()

        submitted = self._dead_letters.submit(letter, written, cancel=stop)
        if submitted is not Submitted.QUEUED:
            return Outcome.CANCELLED
        while not reported.wait(_ACK_POLL_SECONDS):
            if stop.is_set():
                self._dead_letters.stop(self._stop_seconds)
                break

        if verdicts == [True]:
            return Outcome.DEAD_LETTERED
        return Outcome.CANCELLED if stop.is_set() else Outcome.FAILED


class TopicTarget:
    """Publishes replayed records to `topic`, or each to its original
    topic, and waits for each acknowledgement."""

    def __init__(self, settings: Settings, topic: str | None) -> None:
        self._settings = settings
        self._topic = topic
        self._producer = Producer(
            {
                "logger": logging.getLogger("librdkafka"),
                **producer_config(settings),
                "client.id": f"kafka-bridge-dlq-replay-{socket.gethostname()}",
                **_ACKNOWLEDGED_PRODUCER_KEYS,
            }
        )
        self._existing: set[str] = set()
        self._stop_seconds = settings.pipeline.shutdown_deadline_seconds

    def start(self) -> None:
        """Check that a topic given with --topic exists."""
        if self._topic is not None:
            self._check_exists(self._topic)

    def replay(self, letter: StoredLetter, stop: threading.Event) -> Outcome:
        """Publish the record with its own headers and the replay count."""
        topic = replay_topic(self._settings, letter, self._topic)
        self._check_exists(topic)
        record = letter.replayed_record()
        errors: list[KafkaError | None] = []

        def on_delivery(error: KafkaError | None, message: Any) -> None:
            errors.append(error)

        try:
            self._producer.produce(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as error:
            _log_failure(letter, topic, str(error))
            return Outcome.FAILED

        if not self._await(errors, stop):
            return Outcome.CANCELLED
        if errors[0] is not None:
            _log_failure(letter, topic, errors[0].str())
            return Outcome.FAILED
        return Outcome.DELIVERED

    def close(self, timeout_seconds: float) -> None:
        """Wait for what is still unacknowledged, within the time given."""
        self._producer.flush(timeout_seconds)

    def _await(
        self, reports: list[KafkaError | None], stop: threading.Event
    ) -> bool:
        """Serve delivery reports until ours came; False if a stop's
        deadline ran out first."""
        deadline: Deadline | None = None
        while not reports:
            self._producer.poll(_ACK_POLL_SECONDS)
            if stop.is_set():
                deadline = deadline or Deadline(self._stop_seconds)
                if deadline.expired:
                    return False
        return True

    def _check_exists(self, topic: str) -> None:
        if topic in self._existing:
            return
        metadata = self._producer.list_topics(
            topic, timeout=_METADATA_TIMEOUT_SECONDS
        )
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ConfigError.single(
                "--to-topic",
                rule="topic-exists",
                value=topic,
                message="the topic to replay into does not exist",
                fix="create it, or name an existing allowed topic with --topic",
            )
        self._existing.add(topic)


def _log_failure(letter: StoredLetter, topic: str, error: str) -> None:
    log.error(
        "replay_publish_failed",
        target_topic=topic,
        error=error,
        dlq_partition=letter.dlq_partition,
        dlq_offset=letter.dlq_offset,
    )
