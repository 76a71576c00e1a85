"""The program a user would write instead of running the bridge.

"Why not twenty lines of Python?" is the question the bridge's figures
have to answer, so the bench measures those lines too: one thread, a
confluent-kafka `poll()` per record, the body the bridge would send (its
envelope of the record) POSTed with `requests.post`, and the record's
offset committed asynchronously once the POST succeeded. Every POST waits
for its answer before the next record is read, and `requests.post` opens
a connection for each, so against an API that takes 20 ms it manages
fewer than 50 records per second.

It runs in a process of its own, so that its CPU is its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

import requests
from confluent_kafka import Consumer

from kafka_bridge.delivery import USER_AGENT
from kafka_bridge.records import Record
from kafka_bridge.transforms import envelope
from tools.bench_ceilings import POST_TIMEOUT_SECONDS
from tools.bench_spawn import LoopWatch, after_reporting, run_together

_POLL_TIMEOUT_SECONDS = 1.0
_LOOP_TIMEOUT_SECONDS = 600.0


class BaselineError(Exception):
    """The baseline loop failed; the message says why."""


@dataclass(frozen=True)
class BaselineRun:
    """What the single-threaded consume-and-POST loop reached."""

    name: str
    records: int
    records_per_second: float
    cpu_ms_per_record: float


@dataclass(frozen=True)
class _Timing:
    first_posted_at: float
    last_posted_at: float
    cpu_seconds: float


def measure_baseline(
    name: str,
    bootstrap: str,
    topic: str,
    url: str,
    count: int,
    watch: LoopWatch | None = None,
) -> BaselineRun:
    """Records per second of the loop over `count` records of the topic,
    from its first POST's answer to its last."""
    if count < 2:
        raise BaselineError("the baseline needs at least 2 records")
    [timing] = run_together(
        consume_and_post, [(bootstrap, topic, url, count)],
        timeout_seconds=_LOOP_TIMEOUT_SECONDS, watch=watch,
    )
    span_seconds = timing.last_posted_at - timing.first_posted_at
    return BaselineRun(
        name=name,
        records=count,
        records_per_second=(count - 1) / max(span_seconds, 1e-6),
        cpu_ms_per_record=timing.cpu_seconds * 1000 / count,
    )


def consume_and_post(
    start_line: Barrier, bootstrap: str, topic: str, url: str, count: int
) -> _Timing:
    """The loop itself. Run in a process of its own."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # Closing waits for every commit still in flight, which takes seconds
    # after a commit per record: not part of the loop's time.
    after_reporting(consumer.close)
    consumer.subscribe([topic])
    deadline = time.monotonic() + _LOOP_TIMEOUT_SECONDS

    # Joining the group is left out of the timing, as for the bridge.
    first = _next_message(consumer, deadline)
    start_line.wait()
    return _post_each(consumer, first, url, count, deadline)


def _post_each(
    consumer: Consumer, first: Any, url: str, count: int, deadline: float
) -> _Timing:
    cpu_started = time.process_time()
    message = first
    posted = 0
    first_posted_at = 0.0

    while True:
        _post(url, _record_of(message))
        consumer.commit(message=message, asynchronous=True)
        posted += 1
        if posted == 1:
            first_posted_at = time.monotonic()
        if posted == count:
            break
        message = _next_message(consumer, deadline)

    return _Timing(
        first_posted_at, time.monotonic(), time.process_time() - cpu_started
    )


def _next_message(consumer: Consumer, deadline: float) -> Any:
    while time.monotonic() < deadline:
        message = consumer.poll(_POLL_TIMEOUT_SECONDS)
        if message is None:
            continue
        if message.error() is not None:
            raise BaselineError(f"the baseline's poll failed: {message.error()}")
        return message
    raise BaselineError(
        f"the baseline did not finish within {_LOOP_TIMEOUT_SECONDS:.0f} s"
    )


def _post(url: str, record: Record) -> None:
    response = requests.post(
        url,
        data=envelope(record),
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": record.coordinates,
        },
        timeout=POST_TIMEOUT_SECONDS,
    )
    response.raise_for_status()


def _record_of(message: Any) -> Record:
    # The bridge's own view of a message, so the body is the bridge's.
    return Record.from_message(message)
