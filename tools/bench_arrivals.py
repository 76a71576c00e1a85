"""Which of a case's records reached the sink, and when.

Both sinks log every answer: its time, to the millisecond, and the
request's Idempotency-Key. In record mode the key is the record's
coordinates (topic/partition/offset), so the log tells when each record
arrived, which never did (missing) and which came twice (duplicates). In
batch mode a POST's key names only its first and last records,
"<first>..<last>" (kafka_bridge.batches.batch_key); the records between
may come from other partitions, so the log gives times per POST: enough
for the rate, and for the latency of each batch's first and last record,
but not for counting records. That every record was delivered is known
in both modes from the consumer group's committed offsets.

The sinks outlive the cases, so each case reads the log from where it
began, and only the keys of its own topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tools.bench_records import Produced
from tools.nginx_sink import ArrivalLog

_POLL_SECONDS = 0.25
_BATCH_KEY_SEPARATOR = ".."


@dataclass(frozen=True)
class Post:
    """One POST of the case: when it was answered, and its key."""

    answered_at_seconds: float
    key: str

    @property
    def first(self) -> str:
        """The coordinates of its first record (its only one, per record)."""
        return self.key.partition(_BATCH_KEY_SEPARATOR)[0]

    @property
    def last(self) -> str:
        first, _, last = self.key.partition(_BATCH_KEY_SEPARATOR)
        return last or first


class CaseArrivals:
    """One case's POSTs, read from a sink's log shared by all cases."""

    def __init__(self, log_path: Path, topic: str) -> None:
        self._log = ArrivalLog(log_path)
        # What earlier cases left in the log is not this case's.
        self._log.read()
        self._prefix = f"{topic}/"
        self._posts: dict[str, Post] = {}
        self.duplicates = 0

    def wait_for_keys(self, keys: Iterable[str], timeout_seconds: float) -> None:
        """Read until every key has arrived, or until the timeout. A sink
        writes its log up to a second after it answered."""
        wanted = set(keys)
        pause = threading.Event()
        deadline = time.monotonic() + timeout_seconds
        self._read()
        while not wanted <= self._posts.keys():
            if time.monotonic() > deadline:
                return
            pause.wait(_POLL_SECONDS)
            self._read()

    def settle(self, seconds: float) -> None:
        """Wait long enough for the sinks to write out what they answered,
        then read it: for batches, whose keys cannot be known beforehand."""
        threading.Event().wait(seconds)
        self._read()

    def posts(self) -> list[Post]:
        """The case's POSTs so far, each key once, at its first answer."""
        return list(self._posts.values())

    def answered_at(self, key: str) -> float | None:
        post = self._posts.get(key)
        return None if post is None else post.answered_at_seconds

    def _read(self) -> None:
        for arrival in self._log.read():
            key = arrival.idempotency_key
            if not key.startswith(self._prefix):
                continue
            if key in self._posts:
                self.duplicates += 1
            else:
                self._posts[key] = Post(arrival.answered_at_seconds, key)


@dataclass(frozen=True)
class Drain:
    """How the backlog went: the rate over its POSTs and their span."""

    records_per_second: float
    first_answer_seconds: float
    last_answer_seconds: float
    posts: int
    missing: int | None
    all_joined: bool


def drain_of_records(
    arrivals: CaseArrivals, backlog: Produced, joined_at: float | None
) -> Drain:
    """Record mode: each backlog record's first answer. The rate runs from
    the first answer to the last, as the ceilings leave out starting too;
    or, given the time every process had joined the group, from the
    first answer after it."""
    times = [
        answered
        for key in backlog.coordinates()
        if (answered := arrivals.answered_at(key)) is not None
    ]
    return _drain(times, len(times), backlog.count - len(times), joined_at)


def drain_of_batches(
    arrivals: CaseArrivals,
    backlog: Produced,
    later: Iterable[str],
    joined_at: float | None,
) -> Drain:
    """Batch mode: the backlog's POSTs are those not of a later phase's
    records (`later`: their coordinates). POSTs are taken to carry the
    mean batch, as the first record is left out per record."""
    later_records = set(later)
    times = [
        post.answered_at_seconds
        for post in arrivals.posts()
        if post.first not in later_records
    ]
    return _drain(times, backlog.count, None, joined_at)


def _drain(
    times: list[float],
    records: int,
    missing: int | None,
    joined_at: float | None,
) -> Drain:
    """The rate of `records` spread over POSTs answered at `times`."""
    if len(times) < 2:
        raise ValueError(
            f"the sink logged {len(times)} of the case's POSTs; a rate "
            f"needs at least two"
        )
    joined = [t for t in times if joined_at is not None and t >= joined_at]
    window = joined if len(joined) >= 2 else times

    first, last = min(window), max(window)
    # The sinks log milliseconds; a shorter span would divide by 0.
    span_seconds = max(last - first, 1e-3)
    moved = records * (len(window) - 1) / len(times)
    return Drain(
        moved / span_seconds, first, last, len(times), missing,
        all_joined=window is joined,
    )


def added_latencies_ms(
    arrivals: CaseArrivals, live: Produced, sink_delay_seconds: float
) -> list[float]:
    """Sorted: each timed record's answer minus its Kafka timestamp, less
    the time the sink itself waits. In batch mode only the first and the
    last record of each batch are timed; records are taken by a worker in
    the order they were consumed, so these are the batch's longest and
    shortest waits, about."""
    timestamps_ms = live.timestamps_by_coordinates()
    sink_delay_ms = sink_delay_seconds * 1000
    latencies = []
    for post in arrivals.posts():
        answered_ms = post.answered_at_seconds * 1000
        for coordinates in {post.first, post.last}:
            timestamp_ms = timestamps_ms.get(coordinates)
            if timestamp_ms is not None:
                latencies.append(answered_ms - timestamp_ms - sink_delay_ms)
    return sorted(latencies)
