"""Several records in one POST: collecting them, encoding them, naming them.

A POST costs far more CPU than the record it carries, so sending records in
batches moves many times more of them per core. The API's answer applies to
the whole batch; the worker pool decides what to do with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from kafka_bridge.deadline import Deadline
from kafka_bridge.records import Record

FORMATS = {
    "json_array": "application/json",
    "ndjson": "application/x-ndjson",
}


def encode(payloads: Sequence[bytes], batch_format: str) -> bytes:
    """Join JSON payloads as one JSON array, or as NDJSON lines.

    The payloads are JSON texts already, so joining them is enough: they
    are not parsed again.
    """
    if batch_format == "ndjson":
        return b"".join(payload.rstrip(b"\n") + b"\n" for payload in payloads)
    return b"[" + b",".join(payloads) + b"]"


def batch_key(first: Record, last: Record) -> str:
    """The Idempotency-Key of a batch: its first and last coordinates."""
    return f"{first.coordinates}..{last.coordinates}"


def collect(
    take: Callable[[int, float], list[Record]],
    *,
    max_records: int,
    max_wait_seconds: float,
    idle_seconds: float,
) -> list[Record]:
    """Up to `max_records` records: the first waited for up to
    `idle_seconds`, the rest for what is left of `max_wait_seconds`.

    `take(most, timeout)` returns up to `most` records, as many as are
    ready once the first came, or [] after the timeout.
    """
    records = take(max_records, idle_seconds)
    if not records:
        return []

    deadline = Deadline(max_wait_seconds)
    while len(records) < max_records:
        more = take(max_records - len(records), deadline.remaining())
        if not more:
            break
        records += more
    return records


def by_size(
    sizes: Sequence[int], max_bytes: int
) -> Iterator[tuple[int, int]]:
    """(start, end) index ranges whose sizes add up to at most `max_bytes`;
    an item larger than that on its own makes a range of one."""
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > max_bytes:
            yield start, index
            start, total = index, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)
