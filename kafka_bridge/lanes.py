"""Queues between the poll thread and the workers that keep the order the
user asked for.

With `ordering: none` every worker takes from one shared queue: the fastest,
and no order. With `partition` or `key`, each worker has a lane of its own
and a record always goes to the same lane as the records it must follow: the
lane of its partition, or of its key within its partition. A lane is worked
by one thread, so its records are delivered one after the other, in offset
order, while other lanes run in parallel. A record without a key is ordered
by its partition.
"""

from __future__ import annotations

import math
import queue
import zlib

from kafka_bridge.records import Record

ORDERINGS = ("key", "partition", "none")


class Lanes:
    """Bounded queues from the poll thread to `workers` worker threads.

    `put_nowait` raises queue.Full when the record's lane is full: the poll
    thread then holds the record back and pauses its partitions.
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
        per_lane = max(1, math.ceil(capacity / lane_count))
        self._queues: list[queue.Queue[Record]] = [
            queue.Queue(maxsize=per_lane) for _ in range(lane_count)
        ]

    def put_nowait(self, record: Record) -> None:
        """Queue the record on its lane, or raise queue.Full."""
        self._queues[self._lane_of(record)].put_nowait(record)

    def get(self, worker: int, timeout_seconds: float) -> Record:
        """The next record for this worker; queue.Empty after the timeout."""
        lane = self._queues[worker % len(self._queues)]
        return lane.get(timeout=timeout_seconds)

    def qsize(self) -> int:
        """Records waiting in all lanes."""
        return sum(lane.qsize() for lane in self._queues)

    def _lane_of(self, record: Record) -> int:
        lanes = len(self._queues)
        if lanes == 1:
            return 0
        # crc32 rather than hash(): stable across processes and runs, so a
        # key's lane does not depend on PYTHONHASHSEED.
        route = f"{record.topic}\0{record.partition}".encode()
        if self.ordering == "key" and record.key is not None:
            route += b"\0" + record.key
        return zlib.crc32(route) % lanes
