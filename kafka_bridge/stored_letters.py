"""A dead letter read back from the dead-letter topic.

Replaying a letter needs the record as it was before it failed: its
topic, partition and offset (which make its delivery's idempotency key),
its key, value and own headers, and why it failed. `DeadLetter.headers`
wrote all of that into `kafka-bridge.*` headers; this module reads it back
and says how the record looks when it is sent out again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka_bridge.dead_letters import (
    HEADER_PREFIX,
    REPLAY_COUNT_HEADER,
    is_bridge_header,
    without_bridge_headers,
)
from kafka_bridge.errors import BridgeError
from kafka_bridge.records import Header, KafkaMessage, Record

# The headers without which a letter cannot be traced to its record.
_COORDINATE_HEADERS = (
    "original.topic",
    "original.partition",
    "original.offset",
)


class NotALetter(BridgeError):
    """A message in the dead-letter topic that the bridge did not write, or
    whose headers cannot be read; says what is missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLetter:
    """A letter's place in the DLQ, the record it holds, and its failure.

    `original` is the record as first consumed, its headers without any
    `kafka-bridge.*` one. `failed_at` is the `kafka-bridge.failure.last`
    header, or the letter's Kafka timestamp when that header is absent.
    `replay_count` is how many times the record was replayed before.
    """

    dlq_partition: int
    dlq_offset: int
    original: Record
    stage: str | None
    error_class: str | None
    status: int | None
    failed_at: datetime | None
    replay_count: int

    @classmethod
    def from_message(cls, message: KafkaMessage) -> StoredLetter:
        """Read a consumed DLQ message; NotALetter if it cannot be traced."""
        letter = Record.from_message(message)
        ours = _bridge_headers(letter.headers)
        missing = [name for name in _COORDINATE_HEADERS if name not in ours]
        if missing:
            raise NotALetter(
                "no " + ", ".join(HEADER_PREFIX + name for name in missing)
                + " header"
            )

        original = Record(
            topic=ours["original.topic"],
            partition=_whole_number(ours, "original.partition"),
            offset=_whole_number(ours, "original.offset"),
            key=letter.key,
            value=letter.value,
            headers=without_bridge_headers(letter.headers),
            timestamp_ms=_optional_number(ours, "original.timestamp_ms"),
        )
        return cls(
            dlq_partition=letter.partition,
            dlq_offset=letter.offset,
            original=original,
            stage=ours.get("error.stage"),
            error_class=ours.get("error.class"),
            status=_optional_number(ours, "http.status"),
            failed_at=_failure_time(ours, letter.timestamp_ms),
            replay_count=_optional_number(ours, "replay.count") or 0,
        )

    def replayed_headers(self) -> tuple[Header, ...]:
        """The record's own headers and the replay count, one higher."""
        count = str(self.replay_count + 1).encode()
        return (*self.original.headers, (REPLAY_COUNT_HEADER, count))

    def replayed_record(self) -> Record:
        """The original record as it is replayed: same coordinates (and so
        the same idempotency key), the replay count in its headers."""
        return dataclasses.replace(
            self.original, headers=self.replayed_headers()
        )


def _bridge_headers(headers: tuple[Header, ...]) -> dict[str, str]:
    """The `kafka-bridge.*` headers as text, without the prefix. Where a
    name repeats, the last one counts: the writer appends its own after the
    record's."""
    found: dict[str, str] = {}
    for name, value in headers:
        if not is_bridge_header(name) or value is None:
            continue
        try:
            found[name.removeprefix(HEADER_PREFIX)] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise NotALetter(f"the {name} header is not UTF-8 text") from None
    return found


def _whole_number(headers: dict[str, str], name: str) -> int:
    text = headers[name]
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise NotALetter(
            f"the {HEADER_PREFIX}{name} header is not a whole number: {text!r}"
        )
    return number


def _optional_number(headers: dict[str, str], name: str) -> int | None:
    return _whole_number(headers, name) if name in headers else None


def _failure_time(
    headers: dict[str, str], letter_timestamp_ms: int | None
) -> datetime | None:
    text = headers.get("failure.last")
    if text is not None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    if letter_timestamp_ms is None:
        return None
    return datetime.fromtimestamp(letter_timestamp_ms / 1000, tz=UTC)
