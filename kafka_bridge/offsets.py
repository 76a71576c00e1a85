"""Which offsets may be committed, per partition, while records finish out
of order.

Workers finish records in any order, but Kafka keeps one committed offset per
partition: committing offset N says every record below N is done. The
tracker therefore remembers, per partition, the offsets handed out in order
and which of them are finished, and offers for commit only the offset of the
lowest record still pending. A slow or failed record holds its partition's
commit back; it never lets a later record be committed past it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass(eq=False)
class PartitionProgress:
    """The pending offsets of one assigned partition.

    `abandoned` is set when the partition is revoked or the bridge shuts
    down: a worker retrying one of its records waits on it, so it gives up
    at once instead of after its backoff. `released` counts pending records
    that will not be finished here (dropped, or released by a worker
    without being done): they hold the commit back, but nothing is left
    to wait for.
    """

    key: TopicPartitionKey
    pending: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    next_offset: int | None = None
    committed_offset: int | None = None
    active: int = 0
    released: int = 0
    abandoned: threading.Event = field(default_factory=threading.Event)

    def advance(self) -> None:
        """Move past every finished offset at the head of the queue."""
        while self.pending and self.pending[0] in self.finished:
            offset = self.pending.popleft()
            self.finished.discard(offset)
            self.next_offset = offset + 1

    @property
    def last_tracked(self) -> int | None:
        """The highest offset tracked, pending or finished: once all are
        finished, the one below the next offset to commit."""
        if self.pending:
            return self.pending[-1]
        return None if self.next_offset is None else self.next_offset - 1

    @property
    def commit_offset(self) -> int | None:
        """The offset a commit may name: the lowest one still pending."""
        if self.pending:
            return self.pending[0]
        return self.next_offset


class OffsetTracker:
    """Thread-safe per-partition record of handed-out and finished offsets.

    The poll thread calls `track` for each record in consumption order;
    workers call `begin` and `finish`; the poll thread asks `committable`
    for what to commit and reports commits back with `mark_committed`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._partitions: dict[TopicPartitionKey, PartitionProgress] = {}

    def track(self, topic: str, partition: int, offset: int) -> None:
        """Note a record handed to the workers; offsets must increase."""
        self.track_all([(topic, partition, offset)])

    def track_all(self, records: Sequence[tuple[str, int, int]]) -> None:
        """`track` for each (topic, partition, offset) of a consumed batch,
        under one acquisition of the lock."""
        with self._lock:
            for topic, partition, offset in records:
                self._track((topic, partition), offset)

    def begin(self, topic: str, partition: int) -> PartitionProgress | None:
        """Claim a record for delivery, or None if its partition is gone.

        A record of a revoked or abandoned partition must not be delivered:
        its new owner will consume it again.
        """
        with self._lock:
            return self._begin((topic, partition))

    def begin_all(
        self, keys: Sequence[TopicPartitionKey]
    ) -> list[PartitionProgress | None]:
        """`begin` for each of many records, under one acquisition of the
        lock: a batch's worth at a time costs what one record did."""
        with self._lock:
            return [self._begin(key) for key in keys]

    def finish(
        self, progress: PartitionProgress, offset: int, *, done: bool
    ) -> bool:
        """Release a record claimed with `begin`; `done` marks it committable.

        It takes the claim rather than the partition's name so that a
        record of a revoked partition cannot touch a later assignment of
        the same partition. Returns False for such a late completion.
        """
        return self.finish_all([(progress, offset)], done=done)[0]

    def finish_all(
        self, claims: Sequence[tuple[PartitionProgress, int]], *, done: bool
    ) -> list[bool]:
        """`finish` for each (claim, offset), under one acquisition of the
        lock: a POST's worth of records at a time."""
        with self._lock:
            for progress, offset in claims:
                progress.active -= 1
                if done:
                    progress.finished.add(offset)
                else:
                    progress.released += 1
            for progress in {progress for progress, _ in claims}:
                progress.advance()
                if progress.active == 0:
                    self._idle.notify_all()
            return [
                self._partitions.get(progress.key) is progress
                for progress, _ in claims
            ]

    def committable(self) -> dict[TopicPartitionKey, int]:
        """Offsets that moved forward since they were last committed."""
        with self._lock:
            return {
                key: offset
                for key, progress in self._partitions.items()
                if (offset := progress.commit_offset) is not None
                and offset != progress.committed_offset
            }

    def positions(self) -> dict[TopicPartitionKey, int]:
        """Every partition's commit offset, committed before or not.

        For the last commit before partitions go: an asynchronous commit
        still on its way may yet fail, so what is done is sent again.
        """
        with self._lock:
            return {
                key: offset
                for key, progress in self._partitions.items()
                if (offset := progress.commit_offset) is not None
            }

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Record offsets the broker accepted, so they are not sent again."""
        with self._lock:
            for key, offset in offsets.items():
                progress = self._partitions.get(key)
                if progress is not None:
                    progress.committed_offset = offset

    def forget_commits(self, keys: list[TopicPartitionKey]) -> None:
        """Offer these partitions' offsets again: their commit failed."""
        with self._lock:
            for key in keys:
                progress = self._partitions.get(key)
                if progress is not None:
                    progress.committed_offset = None

    def release(self, key: TopicPartitionKey, count: int) -> None:
        """Note `count` tracked records of a partition that will not be
        handed to a worker (the poll thread dropped them)."""
        with self._lock:
            progress = self._partitions.get(key)
            if progress is not None:
                progress.released += count

    def wait_settled(
        self, keys: list[TopicPartitionKey], timeout_seconds: float
    ) -> bool:
        """Wait until every record of these partitions handed to the
        workers is finished or released; False if the time ran out."""
        with self._lock:
            return self._idle.wait_for(
                lambda: self._unsettled(keys) == 0, timeout=timeout_seconds
            )

    def abandon(self, keys: list[TopicPartitionKey] | None = None) -> None:
        """Stop delivery of these partitions' records (all when None)."""
        with self._lock:
            for key, progress in self._partitions.items():
                if keys is None or key in keys:
                    progress.abandoned.set()

    def wait_idle(
        self, keys: list[TopicPartitionKey] | None, timeout_seconds: float
    ) -> bool:
        """Wait until no worker holds a record of these partitions."""
        with self._lock:
            return self._idle.wait_for(
                lambda: self._active(keys) == 0, timeout=timeout_seconds
            )

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        """Drop partitions that are no longer assigned."""
        with self._lock:
            for key in keys:
                progress = self._partitions.pop(key, None)
                if progress is not None:
                    progress.abandoned.set()

    def pending_count(self) -> int:
        """Records handed out and not yet finished, over all partitions."""
        with self._lock:
            return sum(
                len(p.pending) - len(p.finished)
                for p in self._partitions.values()
            )

    def _active(self, keys: list[TopicPartitionKey] | None) -> int:
        return sum(
            progress.active
            for key, progress in self._partitions.items()
            if keys is None or key in keys
        )

    def _unsettled(self, keys: list[TopicPartitionKey]) -> int:
        return sum(
            progress.active
            + len(progress.pending) - len(progress.finished)
            - progress.released
            for key, progress in self._partitions.items()
            if key in keys
        )

    def _begin(self, key: TopicPartitionKey) -> PartitionProgress | None:
        progress = self._partitions.get(key)
        if progress is None or progress.abandoned.is_set():
            return None
        progress.active += 1
        return progress

    def _track(self, key: TopicPartitionKey, offset: int) -> None:
        progress = self._partitions.get(key)
        if progress is None:
            progress = self._partitions[key] = PartitionProgress(key)
        last = progress.last_tracked
        if last is not None and offset <= last:
            raise ValueError(
                f"offset {offset} of {key[0]}/{key[1]} is not above "
                f"the last tracked offset {last}"
            )
        progress.pending.append(offset)
