"""The ledger: every record produced, where each one ended up, and the
verdict on a run.

A bridge that was crashed, stopped and starved is judged by bookkeeping,
not by its own counters. Each record the harness produces carries a unique
id, and the broker's delivery report says where it was stored. After the
run, every id must be found in one of the places the bridge promises
(docs/delivery.md): the API, which recorded the id and the Idempotency-Key
of every request it received; the dead-letter topic; or the bridge's log of
records the DLQ rate limiter shed on purpose. Before judging, the harness
waits until the group has committed every partition to its end, so that a
record still on its way is not taken for a lost one.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from tools.local_api import LocalApi

Coordinates = tuple[int, int]
"""A record's place in its topic: (partition, offset)."""

_METADATA_TIMEOUT_SECONDS = 30.0
_QUERY_TIMEOUT_SECONDS = 10.0
_SETTLE_CHECK_SECONDS = 0.25
_FULL_QUEUE_WAIT_SECONDS = 0.1
_READ_POLL_SECONDS = 0.2
# How many ids of one kind a verdict names before it only counts them.
_IDS_SHOWN = 12

_ORIGINAL_TOPIC = "kafka-bridge.original.topic"
_ORIGINAL_PARTITION = "kafka-bridge.original.partition"
_ORIGINAL_OFFSET = "kafka-bridge.original.offset"
_DROP_EVENT = "dead_letter_dropped"


class LedgerError(Exception):
    """The ledger cannot be kept or read: the run cannot be judged."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A record the broker acknowledged: its id and where it is stored."""

    record_id: str
    topic: str
    partition: int
    offset: int

    @property
    def idempotency_key(self) -> str:
        """The key the bridge must send with this record."""
        return f"{self.topic}/{self.partition}/{self.offset}"


class LedgerProducer:
    """Produces records with unique ids and keeps what the broker acked.

    Ids are `<tag>-<index>`; records go round-robin over the partitions,
    keyed by their id. A poison record (not JSON) carries its id too, but
    the ledger finds it by its coordinates, as the dead-letter headers
    give them. Safe to use from one producing thread while another reads
    `entries`.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        tag: str | None = None,
        padding_bytes: int = 0,
    ) -> None:
        self.topic = topic
        self.tag = tag or uuid.uuid4().hex[:8]
        self._padding = "x" * padding_bytes
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True}
        )
        metadata = self._producer.list_topics(
            topic, timeout=_METADATA_TIMEOUT_SECONDS
        )
        self.partitions = len(metadata.topics[topic].partitions)
        if self.partitions == 0:
            raise LedgerError(f"topic {topic} has no partitions")
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._errors: list[str] = []
        self._next_index = 0

    def produce(self, count: int, *, poison_every: int = 0) -> None:
        """Produce `count` more records; with `poison_every` N, every Nth
        record's value is not JSON, so the bridge must dead-letter it."""
        for _ in range(count):
            index = self._next_index
            self._next_index += 1
            poison = poison_every > 0 and index % poison_every == 0
            self._produce_one(index, poison)

    def flush(self, timeout_seconds: float) -> None:
        """Wait for every delivery report; raise if one failed or is late."""
        remaining = self._producer.flush(timeout_seconds)
        with self._lock:
            errors = list(self._errors)
        if remaining or errors:
            raise LedgerError(
                f"{remaining} records unacknowledged after "
                f"{timeout_seconds} s; errors: {errors[:3]}"
            )

    @property
    def entries(self) -> list[Entry]:
        """The records acknowledged so far."""
        with self._lock:
            return list(self._entries)

    def _produce_one(self, index: int, poison: bool) -> None:
        record_id = f"{self.tag}-{index:07d}"
        if poison:
            value = f"{{not json {record_id}".encode()
        else:
            document = {"id": record_id, "n": index, "pad": self._padding}
            value = json.dumps(document).encode()

        def on_delivery(error: Any, message: Any) -> None:
            with self._lock:
                if error is not None:
                    self._errors.append(str(error))
                    return
                self._entries.append(
                    Entry(
                        record_id,
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    )
                )

        # A full local queue means "not sent": serve reports, try again.
        for _ in range(1000):
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=record_id.encode(),
                    partition=index % self.partitions,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(_FULL_QUEUE_WAIT_SECONDS)
        else:
            raise LedgerError(f"the producer queue stayed full: {record_id}")
        self._producer.poll(0)


@dataclass(frozen=True, slots=True)
class Receipt:
    """One request the API received: the record id in its body, its
    Idempotency-Key, the status it was answered with when known, and
    whether its whole body arrived.

    A bridge killed while sending leaves the API a body shorter than its
    Content-Length. The local API records it anyway; a real server would
    not have acted on it, so the ledger counts it as neither a delivery
    nor an unexpected record.
    """

    record_id: str | None
    idempotency_key: str | None
    status: int | None = None
    complete: bool = True

    @property
    def delivered(self) -> bool:
        """A whole request answered 2xx; an unknown status counts as one,
        since the API's HTTP report of what it received has no statuses."""
        if not self.complete:
            return False
        return self.status is None or 200 <= self.status < 300


def receipts_of(api: LocalApi) -> list[Receipt]:
    """What an API in this process received."""
    received = api.received()
    if len(received) < api.received_count():
        raise LedgerError(
            f"the API kept {len(received)} of {api.received_count()} "
            "requests; raise its max_recorded"
        )
    return [
        Receipt(
            _record_id(_parsed(request.body)),
            _header(request.headers, "Idempotency-Key"),
            request.answered_status,
            complete=len(request.body) >= _content_length(request.headers),
        )
        for request in received
    ]


def receipts_from_url(base_url: str) -> list[Receipt]:
    """What an API running in another process received, read from its
    `/_control/received` report."""
    response = requests.get(
        f"{base_url}/_control/received",
        params={"bodies": "1", "headers": "1"},
        timeout=_QUERY_TIMEOUT_SECONDS,
    )
    response.raise_for_status()
    report = response.json()
    if report["recorded"] < report["count"]:
        raise LedgerError(
            f"the API at {base_url} kept {report['recorded']} of "
            f"{report['count']} requests; raise its --max-recorded"
        )
    return [
        Receipt(
            _record_id(body),
            _header(headers, "Idempotency-Key"),
            # A body that is not JSON comes back as text.
            complete=not isinstance(body, str)
            or len(body.encode()) >= _content_length(headers),
        )
        for body, headers in zip(
            report["bodies"], report["headers"], strict=True
        )
    ]


def dead_letter_coordinates(
    bootstrap: str, dlq_topic: str, topic: str, timeout_seconds: float
) -> list[Coordinates]:
    """The original coordinates of every letter in the dead-letter topic
    that came from `topic`, read from its start to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ledger-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = _end_offsets(consumer, dlq_topic)
        consumer.assign(
            [TopicPartition(dlq_topic, p, OFFSET_BEGINNING) for p in ends]
        )
        letters = _read_to_end(consumer, ends, timeout_seconds)
    finally:
        consumer.close()
    return [
        coordinates
        for headers in letters
        if (coordinates := _original_coordinates(headers, topic)) is not None
    ]


def dropped_coordinates(log_text: str, topic: str) -> list[Coordinates]:
    """Records of `topic` that the DLQ limiter shed, from the bridge's JSON
    log (`dead_letter_dropped` events name their coordinates)."""
    dropped = []
    for line in log_text.splitlines():
        event = _json_line(line)
        if event.get("event") == _DROP_EVENT and event.get("topic") == topic:
            dropped.append((int(event["partition"]), int(event["offset"])))
    return dropped


@dataclass(frozen=True)
class Settlement:
    """The group's committed offsets against the partitions' end offsets."""

    committed: Mapping[int, int]
    end: Mapping[int, int]

    @property
    def behind(self) -> dict[int, tuple[int, int]]:
        """Partitions not committed to their end: (committed, end)."""
        return {
            partition: (self.committed.get(partition, -1), end)
            for partition, end in sorted(self.end.items())
            if self.committed.get(partition, -1) < end
        }

    @property
    def settled(self) -> bool:
        """Every partition is committed to its end."""
        return bool(self.end) and not self.behind


def settle(
    bootstrap: str, group_id: str, topic: str, timeout_seconds: float
) -> Settlement:
    """Wait until the group has committed every partition of the topic to
    its end offset, or the time is up; the last reading either way."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
        }
    )
    pause = threading.Event()
    deadline = time.monotonic() + timeout_seconds
    reading = Settlement({}, {})
    try:
        while True:
            reading = _read_settlement(consumer, topic) or reading
            if reading.settled or time.monotonic() >= deadline:
                return reading
            pause.wait(_SETTLE_CHECK_SECONDS)
    finally:
        consumer.close()


@dataclass(frozen=True)
class Verdict:
    """What the ledger found, per partition where a partition is known.

    `missing`: ids produced and found nowhere. `unexpected`: requests or
    letters for records never produced. `mislabelled`: requests whose
    Idempotency-Key is not their record's coordinates. `duplicates`: the id
    of every copy beyond the first (API and dead-letter topic together).
    `behind`: partitions the group had not committed to their end.
    `cut_off`: requests whose body did not arrive whole.
    """

    produced: int
    delivered: int
    dead_lettered: int
    dropped: int
    missing: Mapping[int, Sequence[str]]
    unexpected: Sequence[str]
    mislabelled: Sequence[str]
    duplicates: Mapping[int, Sequence[str]]
    behind: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    cut_off: int = 0

    @property
    def missing_count(self) -> int:
        return sum(len(ids) for ids in self.missing.values())

    @property
    def duplicate_count(self) -> int:
        return sum(len(ids) for ids in self.duplicates.values())

    def problems(self, max_duplicates: int) -> list[str]:
        """One readable line per broken promise; empty when all held."""
        problems = []
        if self.behind:
            problems.append("not committed to the end: " + ", ".join(
                f"partition {p} at {c} of {e}"
                for p, (c, e) in self.behind.items()
            ))
        if self.missing:
            problems.append(
                f"{self.missing_count} records missing: "
                + "; ".join(
                    f"partition {p}: {_shown(ids)}"
                    for p, ids in sorted(self.missing.items())
                )
            )
        if self.unexpected:
            problems.append(
                f"{len(self.unexpected)} unexpected: {_shown(self.unexpected)}"
            )
        if self.mislabelled:
            problems.append(
                f"{len(self.mislabelled)} with a wrong Idempotency-Key: "
                f"{_shown(self.mislabelled)}"
            )
        if self.duplicate_count > max_duplicates:
            problems.append(
                f"{self.duplicate_count} duplicates, more than the "
                f"{max_duplicates} allowed: "
                + "; ".join(
                    f"partition {p}: {_shown(ids)}"
                    for p, ids in sorted(self.duplicates.items())
                )
            )
        return problems

    def assert_sound(self, max_duplicates: int) -> None:
        """Fail, naming the ids and partitions, unless every record is
        accounted for and the duplicates stay within the bound."""
        problems = self.problems(max_duplicates)
        summary = (
            f"ledger of {self.produced} records: {self.delivered} delivered, "
            f"{self.dead_lettered} dead-lettered, {self.dropped} dropped, "
            f"{self.cut_off} cut off mid-body"
        )
        assert not problems, "\n  ".join([summary, *problems])


def judge(
    produced: Sequence[Entry],
    receipts: Iterable[Receipt],
    dead_letters: Iterable[Coordinates] = (),
    dropped: Iterable[Coordinates] = (),
    settlement: Settlement | None = None,
) -> Verdict:
    """Account for every record produced."""
    by_id = {entry.record_id: entry for entry in produced}
    by_place = {(entry.partition, entry.offset): entry for entry in produced}
    copies: Counter[str] = Counter()
    unexpected: list[str] = []
    mislabelled: list[str] = []
    received = list(receipts)
    whole = [receipt for receipt in received if receipt.complete]

    delivered = _count_receipts(whole, by_id, copies, unexpected, mislabelled)
    lettered = _count_letters(dead_letters, by_place, copies, unexpected)
    shed = {
        by_place[place].record_id for place in dropped if place in by_place
    }

    accounted = delivered | lettered | shed
    missing: defaultdict[int, list[str]] = defaultdict(list)
    duplicates: defaultdict[int, list[str]] = defaultdict(list)
    for entry in sorted(produced, key=lambda e: (e.partition, e.offset)):
        if entry.record_id not in accounted:
            missing[entry.partition].append(entry.record_id)
        extra = copies[entry.record_id] - 1
        duplicates[entry.partition].extend([entry.record_id] * extra)

    return Verdict(
        produced=len(produced),
        delivered=len(delivered),
        dead_lettered=len(lettered),
        dropped=len(shed),
        missing=dict(missing),
        unexpected=unexpected,
        mislabelled=mislabelled,
        duplicates={p: ids for p, ids in duplicates.items() if ids},
        behind=settlement.behind if settlement is not None else {},
        cut_off=len(received) - len(whole),
    )


def _count_receipts(
    receipts: Iterable[Receipt],
    by_id: Mapping[str, Entry],
    copies: Counter[str],
    unexpected: list[str],
    mislabelled: list[str],
) -> set[str]:
    delivered = set()
    for receipt in receipts:
        entry = by_id.get(receipt.record_id or "")
        if entry is None:
            unexpected.append(
                f"{receipt.record_id or '(no id)'} "
                f"(Idempotency-Key {receipt.idempotency_key})"
            )
            continue
        if receipt.idempotency_key != entry.idempotency_key:
            mislabelled.append(
                f"{entry.record_id} sent as {receipt.idempotency_key}, "
                f"stored at {entry.idempotency_key}"
            )
        if receipt.delivered:
            copies[entry.record_id] += 1
            delivered.add(entry.record_id)
    return delivered


def _count_letters(
    dead_letters: Iterable[Coordinates],
    by_place: Mapping[Coordinates, Entry],
    copies: Counter[str],
    unexpected: list[str],
) -> set[str]:
    lettered = set()
    for partition, offset in dead_letters:
        entry = by_place.get((partition, offset))
        if entry is None:
            unexpected.append(
                f"dead letter of partition {partition} offset {offset}"
            )
            continue
        copies[entry.record_id] += 1
        lettered.add(entry.record_id)
    return lettered


def _shown(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_IDS_SHOWN])
    more = len(ids) - _IDS_SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown


def _parsed(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _record_id(body: object) -> str | None:
    """The id in an envelope body: {"value": {"id": ...}, ...}."""
    if not isinstance(body, dict):
        return None
    value = body.get("value")
    if not isinstance(value, dict):
        return None
    record_id = value.get("id")
    return record_id if isinstance(record_id, str) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _content_length(headers: Mapping[str, str]) -> int:
    length = _header(headers, "Content-Length") or "0"
    return int(length) if length.isdigit() else 0


def _json_line(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    metadata = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_SECONDS)
    ends = {}
    for partition in metadata.topics[topic].partitions:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition),
            timeout=_QUERY_TIMEOUT_SECONDS,
            cached=False,
        )
        ends[partition] = high
    return ends


def _read_to_end(
    consumer: Consumer, ends: Mapping[int, int], timeout_seconds: float
) -> list[dict[str, str]]:
    """Headers of every record up to the end offsets; raise if the time
    runs out first, since a partial read would hide letters."""
    read: list[dict[str, str]] = []
    positions = {partition: 0 for partition in ends}
    deadline = time.monotonic() + timeout_seconds
    while any(positions[p] < end for p, end in ends.items()):
        if time.monotonic() >= deadline:
            raise LedgerError(
                f"read {len(read)} dead letters in {timeout_seconds} s "
                f"without reaching the end offsets {dict(ends)}"
            )
        message = consumer.poll(_READ_POLL_SECONDS)
        if message is None or message.error() is not None:
            continue
        partition, offset = message.partition(), message.offset()
        if partition is None or offset is None:
            continue
        positions[partition] = offset + 1
        read.append(_text_headers(message.headers()))
    return read


def _text_headers(headers: Any) -> dict[str, str]:
    return {
        name: value.decode() if isinstance(value, bytes) else ""
        for name, value in headers or []
    }


def _original_coordinates(
    headers: Mapping[str, str], topic: str
) -> Coordinates | None:
    if headers.get(_ORIGINAL_TOPIC) != topic:
        return None
    return int(headers[_ORIGINAL_PARTITION]), int(headers[_ORIGINAL_OFFSET])


def _read_settlement(consumer: Consumer, topic: str) -> Settlement | None:
    """One reading, or None while the broker does not answer."""
    try:
        end = _end_offsets(consumer, topic)
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in end],
            timeout=_QUERY_TIMEOUT_SECONDS,
        )
    except KafkaException:
        return None
    return Settlement({tp.partition: tp.offset for tp in committed}, end)
