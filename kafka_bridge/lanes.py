"""Queues between the poll thread and the workers that keep the order the
user asked for.

With `ordering: none` every worker takes from one shared queue: the fastest,
and no order. With `partition` or `key`, each worker has a lane of its own
and a record always goes to the same lane as the records it must follow: the
lane of its partition, or of its key within its partition. A lane is worked
by one thread, so its records are delivered one after the other, in offset
order, while other lanes run in parallel. A record without a key is ordered
by its partition.

Records go in and come out many at a time, under one lock: the poll thread
puts a consumed batch, a worker takes what it will deliver next, so the
lock is taken once per batch rather than twice per record.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import deque
from collections.abc import Sequence

from kafka_bridge.records import Record

ORDERINGS = ("key", "partition", "none")


class Lanes:
    """Bounded queues from the poll thread to `workers` worker threads.

    `put` queues records until one's lane is full and says how many it
    queued: the poll thread holds the rest back, and waits for room with
    `wait_for_room`.
    """

    def __init__(self, ordering: str, workers: int, capacity: int) -> None:
        if ordering not in ORDERINGS:
            raise ValueError(
                f"ordering must be one of {', '.join(ORDERINGS)}, "
                f"not {ordering!r}"
            )
        self.ordering = ordering
        self.capacity = capacity
        lane_count = 1 if ordering == "none" else workers
        self._per_lane = max(1, math.ceil(capacity / lane_count))
        self._lock = threading.Lock()
        self._lanes = [_Lane(self._lock) for _ in range(lane_count)]
        self._room = threading.Condition(self._lock)
        self._size = 0
        self._partition_routes: dict[tuple[str, int], int] = {}

    def put(self, records: Sequence[Record]) -> int:
        """Queue the records in order until one's lane is full; how many
        were queued."""
        with self._lock:
            queued = 0
            filled: set[_Lane] = set()
            for record in records:
                lane = self._lanes[self._lane_of(record)]
                if len(lane.records) >= self._per_lane:
                    break
                lane.records.append(record)
                filled.add(lane)
                queued += 1
            self._size += queued
            for lane in filled:
                lane.ready.notify(len(lane.records))
            return queued

    def take(
        self, worker: int, max_records: int, timeout_seconds: float
    ) -> list[Record]:
        """Up to `max_records` of this worker's lane, as many as are there;
        waits up to the timeout for the first. [] if none came."""
        lane = self._lanes[worker % len(self._lanes)]
        with self._lock:
            if not lane.records and not lane.ready.wait_for(
                lambda: bool(lane.records), timeout_seconds
            ):
                return []
            count = min(max_records, len(lane.records))
            taken = [lane.records.popleft() for _ in range(count)]
            self._size -= count
            self._room.notify_all()
            return taken

    def wait_for_room(self, record: Record, timeout_seconds: float) -> bool:
        """Wait until the record's lane has room; False if it had none
        when the time ran out."""
        lane = self._lanes[self._lane_of(record)]
        with self._lock:
            return self._room.wait_for(
                lambda: len(lane.records) < self._per_lane, timeout_seconds
            )

    def room(self) -> int:
        """Records the lanes could take now, all lanes together."""
        with self._lock:
            return max(0, self.capacity - self._size)

    def qsize(self) -> int:
        """Records waiting in all lanes."""
        return self._size

    def _lane_of(self, record: Record) -> int:
        lanes = len(self._lanes)
        if lanes == 1:
            return 0
        # crc32 rather than hash(): stable across processes and runs, so a
        # key's lane does not depend on PYTHONHASHSEED. The partition's
        # part is computed once; the key's continues it.
        route = self._partition_routes.get((record.topic, record.partition))
        if route is None:
            route = zlib.crc32(f"{record.topic}\0{record.partition}".encode())
            self._partition_routes[(record.topic, record.partition)] = route
        if self.ordering == "key" and record.key is not None:
            route = zlib.crc32(b"\0" + record.key, route)
        return route % lanes


class _Lane:
    """The records of one lane, and the condition its worker waits on."""

    __slots__ = ("ready", "records")

    def __init__(self, lock: threading.Lock) -> None:
        self.records: deque[Record] = deque()
        self.ready = threading.Condition(lock)
