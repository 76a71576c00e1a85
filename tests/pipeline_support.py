"""Building blocks for tests that run the bridge against a real broker.

Producing numbered records, reading a group's committed offsets and
running a bridge in this process with settings close to the defaults.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_bridge.bridge import Bridge
from kafka_bridge.config import Settings, settings_from_mapping

WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Produced:
    """A record the broker acknowledged, with the id carried in its value."""

    record_id: str
    partition: int
    offset: int


def produce(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    values: Mapping[int, bytes] | None = None,
    first_index: int = 0,
) -> list[Produced]:
    """Produce `count` JSON records with unique ids, round-robin over the
    topic's partitions, and return what the broker acknowledged.

    `values` replaces the value of the records at those positions, for
    tests that need a bad record among good ones.
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    )
    acknowledged: list[Produced] = []
    errors: list[str] = []
    partitions = _partition_count(producer, topic)

    for index in range(first_index, first_index + count):
        record_id = f"r-{index:06d}"
        value = (values or {}).get(index) or json.dumps(
            {"id": record_id, "n": index}
        ).encode()

        def on_delivery(error: Any, message: Any, rid: str = record_id) -> None:
            if error is not None:
                errors.append(str(error))
                return
            acknowledged.append(
                Produced(rid, message.partition(), message.offset())
            )

        producer.produce(
            topic,
            value=value,
            key=record_id.encode(),
            partition=index % partitions,
            on_delivery=on_delivery,
        )
        producer.poll(0)

    remaining = producer.flush(WAIT_SECONDS)
    assert remaining == 0 and not errors, (remaining, errors[:3])
    return acknowledged


def committed_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: int
) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id}
    )
    try:
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)],
            timeout=WAIT_SECONDS,
        )
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def committed_total(bootstrap: str, settings: Settings, topic: str) -> int:
    """How many records of the topic the bridge's group has committed."""
    partitions = _partition_count(
        Producer({"bootstrap.servers": bootstrap}), topic
    )
    committed = committed_offsets(
        bootstrap, settings.kafka.group_id, topic, partitions
    )
    return sum(max(0, offset) for offset in committed.values())


def record_count(bootstrap: str, topic: str) -> int:
    """Records in a one-partition topic, from its watermarks."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"watermarks-{uuid.uuid4().hex[:8]}",
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=WAIT_SECONDS
        )
    finally:
        consumer.close()
    return int(high - low)


def wait_until(
    condition: Callable[[], bool], timeout_seconds: float = WAIT_SECONDS
) -> bool:
    """Check `condition` every 0.1 s until it holds or the time is up."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        pause.wait(0.1)
    return condition()


def bridge_settings(
    bootstrap: str, topic: str, api_url: str, **sections: Any
) -> Settings:
    """Settings for a test bridge; `sections` override whole keys, e.g.
    pipeline={"workers": 2}."""
    data: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"test-{uuid.uuid4().hex[:8]}",
            "topics": [topic],
            # Short heartbeats let a member notice a rebalance quickly.
            "consumer": {
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            },
        },
        "api": {
            "primary_url": api_url,
            "retry": {
                "initial_backoff_seconds": 0.01,
                "max_backoff_seconds": 0.1,
            },
        },
        "pipeline": {"workers": 4, "shutdown_deadline_seconds": 10},
        "metrics": {"enabled": False},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return settings_from_mapping(data, environ={})


@contextmanager
def running(settings: Settings) -> Iterator[Bridge]:
    """A started bridge, stopped on the way out even if the test fails."""
    bridge = Bridge(settings)
    bridge.start()
    try:
        assert bridge.poller.assigned.wait(WAIT_SECONDS), "never assigned"
        yield bridge
    finally:
        bridge.stop()


def ids_received(bodies: list[Any]) -> list[str]:
    """The record ids in envelope bodies the API received."""
    return [body["value"]["id"] for body in bodies]


def _text_headers(headers: Any) -> dict[str, str]:
    """Consumed headers as text; a consumer always gets a list of pairs."""
    return {
        name: value.decode() if isinstance(value, bytes) else str(value or "")
        for name, value in headers or []
    }


def _partition_count(producer: Producer, topic: str) -> int:
    metadata = producer.list_topics(topic, timeout=WAIT_SECONDS)
    return len(metadata.topics[topic].partitions)


@dataclass(frozen=True)
class Consumed:
    """A record read back from a topic, headers decoded as text."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_seconds: float = 30.0
) -> list[Consumed]:
    """Read a topic from the start until `expected` records arrived or the
    time is up, whichever comes first; returns what was read."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[Consumed] = []
    deadline = time.monotonic() + timeout_seconds
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            found.append(
                Consumed(
                    message.key(),
                    message.value(),
                    _text_headers(message.headers()),
                )
            )
    finally:
        consumer.close()
    return found
