"""The bench's records: what they hold, producing them, where each landed.

Every case of `make bench` reads a topic of its own, produced just before
it, so that each consumer starts from a full backlog of the same kind of
record: about 1 KB of JSON, an order, keyed by customer. Where each record
landed (partition, offset, Kafka timestamp) is kept, compactly, so that a
POST can be traced back to the record it carries and timed against it.
"""

from __future__ import annotations

import functools
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

# NewTopic lives here in the documentation; the stubs do not re-export it.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

PARTITIONS = 6

_TOPIC_TIMEOUT_SECONDS = 30.0
_FLUSH_TIMEOUT_SECONDS = 120.0
_PACING_TICK_SECONDS = 0.002

# A record's timestamp is when the broker appended it, not when the bench
# handed it to its producer: the latency a consumer adds starts there.
_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
_FULL_QUEUE_WAIT_SECONDS = 0.05


class ProduceError(Exception):
    """The broker refused or did not acknowledge the records."""


def record_value(index: int) -> bytes:
    """A JSON order of about 1 KB; the same index gives the same bytes."""
    lines = [
        {
            "sku": f"sku-{(index + line) % 50_000:05d}",
            "quantity": 1 + (index + line) % 4,
            "unit_price_cents": 199 + (index * 31 + line) % 9_800,
        }
        for line in range(12)
    ]
    return orjson.dumps(
        {
            "order_id": f"order-{index:09d}",
            "customer_id": f"customer-{index % 997}",
            "status": "paid",
            "currency": "EUR",
            "amount_cents": (index * 7_919) % 1_000_000,
            "lines": lines,
            "shipping": {
                "name": "Jordan Example",
                "street": f"{index % 300 + 1} Harbour Road",
                "city": "Rotterdam",
                "postcode": f"{3000 + index % 999} AB",
                "country": "NL",
            },
            "note": "leave the parcel with the neighbour if nobody answers",
        }
    )


def record_key(index: int) -> bytes:
    """Orders of one customer share a key, and so a partition."""
    return f"customer-{index % 997}".encode()


@dataclass(frozen=True)
class Produced:
    """Where each produced record landed, in the order it was produced."""

    topic: str
    partitions: array[int]
    offsets: array[int]
    timestamps_ms: array[int]
    records_per_second: float
    mean_value_bytes: float

    @property
    def count(self) -> int:
        return len(self.offsets)

    def coordinates(self) -> list[str]:
        """Each record's topic/partition/offset: the Idempotency-Key the
        bridge sends for it in record mode."""
        places = zip(self.partitions, self.offsets, strict=True)
        return [
            f"{self.topic}/{partition}/{offset}"
            for partition, offset in places
        ]

    def timestamps_by_coordinates(self) -> dict[str, int]:
        return dict(
            zip(self.coordinates(), self.timestamps_ms, strict=True)
        )

    def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset after the last record produced to it."""
        ends = dict.fromkeys(range(PARTITIONS), 0)
        for partition, offset in zip(
            self.partitions, self.offsets, strict=True
        ):
            ends[partition] = max(ends[partition], offset + 1)
        return ends


class Topics:
    """Creates the cases' topics, and deletes each once its case is done
    to give back its disk, through one admin client for the whole run."""

    def __init__(self, bootstrap: str) -> None:
        self._admin: AdminClient | None = AdminClient(
            {"bootstrap.servers": bootstrap}
        )

    def create(self, name: str) -> str:
        futures = self._client().create_topics(
            [NewTopic(name, PARTITIONS, 1, config=_TOPIC_CONFIG)]
        )
        for future in futures.values():
            future.result(timeout=_TOPIC_TIMEOUT_SECONDS)
        return name

    def delete(self, name: str) -> None:
        for future in self._client().delete_topics([name]).values():
            future.result(timeout=_TOPIC_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Let go of the client before the broker stops, so that it does
        not log its failing reconnections."""
        self._admin = None

    def _client(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("the topics' admin client is closed")
        return self._admin


def produce_backlog(bootstrap: str, topic: str, count: int) -> Produced:
    """Produce records 0 to count - 1 as fast as the broker takes them;
    the rate runs from the first produce() to the last acknowledgement."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
        }
    )
    landed = _Landed(count)
    value_bytes = 0

    started = time.monotonic()
    for index in range(count):
        value = record_value(index)
        value_bytes += len(value)
        _produce_one(producer, topic, index, value, landed.report_for(index))
    _flush(producer)
    elapsed_seconds = time.monotonic() - started

    return landed.produced(topic, count / elapsed_seconds, value_bytes / count)


def produce_paced(
    bootstrap: str, topic: str, first_index: int, count: int, rate: float
) -> Produced:
    """Produce at a steady rate, as a producer at librdkafka's defaults
    would. The values are made beforehand, so that making them does not
    slow the pace.

    Not with linger.ms 0: one produce request per record, thousands a
    second, kept the broker so busy on two cores that records reached
    the log up to a second after they were sent."""
    producer = Producer({"bootstrap.servers": bootstrap})
    values = [record_value(first_index + slot) for slot in range(count)]
    landed = _Landed(count)
    pause = threading.Event()
    started = time.monotonic()
    sent = 0

    while sent < count:
        due = min(count, 1 + int((time.monotonic() - started) * rate))
        for slot in range(sent, due):
            _produce_one(
                producer, topic, first_index + slot, values[slot],
                landed.report_for(slot),
            )
        sent = due
        pause.wait(_PACING_TICK_SECONDS)
    # The rate reached, should producing have fallen behind the pace.
    reached = count / max(time.monotonic() - started, count / rate)
    _flush(producer)

    mean_bytes = sum(map(len, values)) / count
    return landed.produced(topic, reached, mean_bytes)


class _Landed:
    """Delivery reports, kept by slot; the first error is kept."""

    def __init__(self, count: int) -> None:
        self.partitions = array("q", [-1]) * count
        self.offsets = array("q", [-1]) * count
        self.timestamps_ms = array("q", [0]) * count
        self.error: str | None = None

    def report_for(self, slot: int) -> Any:
        return functools.partial(self._report, slot)

    def produced(
        self, topic: str, records_per_second: float, mean_value_bytes: float
    ) -> Produced:
        if self.error is not None:
            raise ProduceError(f"the broker refused a record: {self.error}")
        return Produced(
            topic, self.partitions, self.offsets, self.timestamps_ms,
            records_per_second, mean_value_bytes,
        )

    def _report(self, slot: int, error: Any, message: Any) -> None:
        if error is not None:
            self.error = self.error or str(error)
            return
        self.partitions[slot] = message.partition()
        self.offsets[slot] = message.offset()
        self.timestamps_ms[slot] = message.timestamp()[1]


def _produce_one(
    producer: Producer, topic: str, index: int, value: bytes, report: Any
) -> None:
    while True:
        try:
            producer.produce(
                topic, value=value, key=record_key(index), on_delivery=report
            )
            break
        except BufferError:
            # The local queue is full: let deliveries drain it, then retry.
            producer.poll(_FULL_QUEUE_WAIT_SECONDS)
    producer.poll(0)


def _flush(producer: Producer) -> None:
    if producer.flush(_FLUSH_TIMEOUT_SECONDS) != 0:
        raise ProduceError(
            f"the broker did not acknowledge every record within "
            f"{_FLUSH_TIMEOUT_SECONDS:.0f} s"
        )
