"""The record as the bridge sees it, apart from the Kafka client's types.

Workers, transforms and user functions receive a `Record`, so that none of
them depends on confluent-kafka's `Message`, and a user transform can be
tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# confluent-kafka reports "no timestamp" with this type code.
_TIMESTAMP_NOT_AVAILABLE = 0


class KafkaMessage(Protocol):
    """The part of confluent_kafka.Message that a record is built from."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> list[tuple[str, bytes | None]] | None: ...

    def timestamp(self) -> tuple[int, int]: ...


Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record with its coordinates, as consumed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    timestamp_ms: int | None = None

    @classmethod
    def from_message(cls, message: KafkaMessage) -> Record:
        """Copy what the bridge needs out of a consumed message."""
        timestamp_type, timestamp_ms = message.timestamp()
        headers = message.headers()

        return cls(
            topic=_required(message.topic(), "topic"),
            partition=_required(message.partition(), "partition"),
            offset=_required(message.offset(), "offset"),
            key=message.key(),
            value=message.value(),
            headers=tuple(headers) if headers else (),
            timestamp_ms=(
                None
                if timestamp_type == _TIMESTAMP_NOT_AVAILABLE
                else timestamp_ms
            ),
        )

    @property
    def coordinates(self) -> str:
        """topic/partition/offset, for logs and idempotency keys."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise ValueError(f"a consumed message has no {name}")
    return value
