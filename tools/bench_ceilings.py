"""The ceilings: each half of the bridge's work, done as barely as Python can.

Every record costs the bridge a Kafka consume with a JSON decode, and a
share of an HTTP POST. A figure of records per second means
little alone, so the bench measures each half on its own, on the same
machine in the same run, with as many processes (and, for POSTs, threads)
as the bridge case it is set against, and reports the bridge as a
fraction of the lower of the two:

- consume: bare confluent-kafka loops, the topic's partitions split among
  the processes as one consumer group would split them, each record's
  value decoded with orjson, as the envelope transform checks it;
- POST: threads sharing one `requests` session per process, as the
  bridge's workers do, sending ready bodies (the bridge's envelopes of
  records like the bench's, one per POST or 100 as a JSON array) for a
  fixed time, each request prepared once and copied, as the bridge does.

Each loop runs in processes of its own (tools/bench_spawn.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier

import orjson
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from requests.adapters import HTTPAdapter

from kafka_bridge.batches import encode
from kafka_bridge.delivery import USER_AGENT
from kafka_bridge.records import Record
from kafka_bridge.transforms import envelope
from tools.bench_records import (
    PARTITIONS,
    Produced,
    record_key,
    record_value,
)
from tools.bench_spawn import LoopWatch, run_together

CONSUME_BATCH = 500
# librdkafka's default of one second starves a consumer that drains its
# local queue quickly; the bridge uses the same value.
FETCH_QUEUE_BACKOFF_MS = 10
# As the bridge's defaults, so that a POST waits as long.
POST_TIMEOUT_SECONDS = (3.05, 10.0)

# Distinct records the POST bodies are made of; they are sent in turn.
_BODY_RECORDS = 1_000
_CONSUME_TIMEOUT_SECONDS = 0.5
_LOOP_TIMEOUT_SECONDS = 600.0


class CeilingError(Exception):
    """A ceiling loop failed; the message says which and why."""


@dataclass(frozen=True)
class Ceiling:
    """What one bare loop reached, and the CPU it took per record."""

    name: str
    processes: int
    threads: int
    records_per_second: float
    requests_per_second: float | None
    cpu_ms_per_record: float


@dataclass(frozen=True)
class _Share:
    """What one process of a loop did, on the common monotonic clock."""

    records: int
    requests: int
    started_at: float
    ended_at: float
    cpu_seconds: float
    failure: str | None = None


# -- consume -----------------------------------------------------------


def measure_consume(
    name: str,
    bootstrap: str,
    produced: Produced,
    processes: int,
    watch: LoopWatch | None = None,
) -> Ceiling:
    """Records per second of `processes` consume loops over the topic.

    Each process's rate runs from its first batch, so that fetching the
    metadata and the first records is left out, as it is for the bridge.
    """
    ends = produced.end_offsets()
    used = min(processes, PARTITIONS)
    arguments = [
        (
            bootstrap, produced.topic, f"{name}-{produced.topic}",
            {p: ends[p] for p in range(first, PARTITIONS, used)},
        )
        for first in range(used)
    ]
    shares = run_together(
        consume_partitions, arguments,
        timeout_seconds=_LOOP_TIMEOUT_SECONDS, watch=watch,
    )
    return _ceiling(name, shares, processes=used, threads=1)


def consume_partitions(
    start_line: Barrier,
    bootstrap: str,
    topic: str,
    group: str,
    end_offsets: dict[int, int],
) -> _Share:
    """Read the partitions from their start to the given ends, decoding
    and encoding every value. Run in a process of its own."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
    )
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in end_offsets]
    )
    # A fresh topic's offsets start at 0, so its end is its record count.
    wanted = sum(end_offsets.values())
    start_line.wait()
    try:
        return _consume(consumer, wanted)
    finally:
        consumer.close()


def _consume(consumer: Consumer, wanted: int) -> _Share:
    cpu_started = time.process_time()
    deadline = time.monotonic() + _LOOP_TIMEOUT_SECONDS
    received = 0
    first_batch = 0
    first_at = 0.0

    while received < wanted:
        if time.monotonic() > deadline:
            raise CeilingError(
                f"a consume loop read {received:,} of {wanted:,} records "
                f"in {_LOOP_TIMEOUT_SECONDS:.0f} s"
            )
        # consume() waits for as many as it is asked for: never more than
        # are left, or the last call would wait out its timeout.
        batch = consumer.consume(
            num_messages=min(CONSUME_BATCH, wanted - received),
            timeout=_CONSUME_TIMEOUT_SECONDS,
        )
        for message in batch:
            error = message.error()
            if error is not None:
                raise CeilingError(f"a consume loop failed: {error}")
            value = message.value()
            if value is not None:
                orjson.loads(value)
        if batch and not received:
            first_at, first_batch = time.monotonic(), len(batch)
        received += len(batch)

    return _Share(
        records=received - first_batch,
        requests=0,
        started_at=first_at,
        ended_at=time.monotonic(),
        cpu_seconds=time.process_time() - cpu_started,
    )


# -- POST --------------------------------------------------------------


def measure_post(
    name: str,
    url: str,
    *,
    records_per_post: int,
    processes: int,
    threads: int,
    seconds: float,
    watch: LoopWatch | None = None,
) -> Ceiling:
    """Records per second that `processes` x `threads` POST loops reach
    in `seconds`, with `records_per_post` records in each body."""
    arguments = [
        (url, records_per_post, threads, seconds, f"raw-{name}-{index}")
        for index in range(processes)
    ]
    shares = run_together(
        post_for_a_while, arguments,
        timeout_seconds=seconds * 3, watch=watch,
    )
    return _ceiling(name, shares, processes=processes, threads=threads)


def post_for_a_while(
    start_line: Barrier,
    url: str,
    records_per_post: int,
    threads: int,
    seconds: float,
    key_prefix: str,
) -> _Share:
    """POST ready bodies from `threads` threads until `seconds` have
    passed. Run in a process of its own."""
    bodies = _bodies(records_per_post)
    poster = _Poster(url, bodies, threads, key_prefix)
    start_line.wait()
    try:
        return poster.run(seconds, records_per_post)
    finally:
        poster.close()


def _bodies(records_per_post: int) -> list[bytes]:
    """The bridge's envelopes of records like the bench's, one per body
    or joined into JSON arrays."""
    count = max(_BODY_RECORDS, records_per_post)
    payloads = [
        envelope(
            Record(
                topic="raw",
                partition=index % PARTITIONS,
                offset=index,
                key=record_key(index),
                value=record_value(index),
                timestamp_ms=int(time.time() * 1000),
            )
        )
        for index in range(count)
    ]
    if records_per_post == 1:
        return payloads
    return [
        encode(payloads[start:start + records_per_post], "json_array")
        for start in range(0, count - records_per_post + 1, records_per_post)
    ]


class _Poster:
    """Threads that POST bodies in turn through one session whose pool
    keeps a connection per thread, as the bridge's workers do."""

    def __init__(
        self, url: str, bodies: list[bytes], threads: int, key_prefix: str
    ) -> None:
        self._bodies = bodies
        self._key_prefix = key_prefix
        self._session = _session(threads)
        self._prepared = self._session.prepare_request(
            requests.Request("POST", url)
        )
        self._send_options = self._session.merge_environment_settings(
            url, proxies={}, stream=None, verify=None, cert=None
        )
        self._thread_count = threads
        self._sent = [0] * threads
        self._failures: list[str] = []

    def run(self, seconds: float, records_per_post: int) -> _Share:
        started_at = time.monotonic()
        cpu_started = time.process_time()
        stop_at = started_at + seconds
        threads = [
            threading.Thread(
                target=self._post_until, args=(index, stop_at),
                name=f"raw-post-{index}",
            )
            for index in range(self._thread_count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + _LOOP_TIMEOUT_SECONDS)

        requests_sent = sum(self._sent)
        return _Share(
            records=requests_sent * records_per_post,
            requests=requests_sent,
            started_at=started_at,
            ended_at=time.monotonic(),
            cpu_seconds=time.process_time() - cpu_started,
            failure=self._failures[0] if self._failures else None,
        )

    def close(self) -> None:
        self._session.close()

    def _post_until(self, index: int, stop_at: float) -> None:
        sent = 0
        while time.monotonic() < stop_at:
            body = self._bodies[(index + sent) % len(self._bodies)]
            failure = self._post(body, f"{self._key_prefix}/{index}/{sent}")
            if failure is not None:
                self._failures.append(failure)
                return
            sent += 1
            self._sent[index] = sent

    def _post(self, body: bytes, key: str) -> str | None:
        request = self._prepared.copy()
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        request.headers["Idempotency-Key"] = key
        try:
            response = self._session.send(
                request,
                timeout=POST_TIMEOUT_SECONDS,
                allow_redirects=False,
                **self._send_options,
            )
        except requests.RequestException as error:
            return f"{type(error).__name__}: {error}"

        # Read and released as the bridge does, to reuse the connection.
        _ = response.content
        response.close()
        if response.status_code != 204:
            return f"the sink answered {response.status_code}"
        return None


def _session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=1, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("http://", adapter)
    session.headers.update(
        {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    return session


def _ceiling(
    name: str, shares: list[_Share], *, processes: int, threads: int
) -> Ceiling:
    """The processes' records over the span from the first start to the
    last end; their CPU per record."""
    failures = [share.failure for share in shares if share.failure]
    if failures:
        raise CeilingError(f"the {name} loop failed: {failures[0]}")
    # A process left without partitions has no span of its own.
    active = [share for share in shares if share.records]
    if not active:
        raise CeilingError(f"the {name} loop moved no records")

    records = sum(share.records for share in active)
    span_seconds = max(s.ended_at for s in active) - min(
        s.started_at for s in active
    )
    requests_sent = sum(share.requests for share in shares)
    cpu_seconds = sum(share.cpu_seconds for share in shares)
    return Ceiling(
        name=name,
        processes=processes,
        threads=threads,
        records_per_second=records / span_seconds,
        requests_per_second=(
            requests_sent / span_seconds if requests_sent else None
        ),
        cpu_ms_per_record=cpu_seconds * 1000 / records,
    )
