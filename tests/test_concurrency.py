"""Shared state under many threads: the offset tracker and the metrics."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter

from kafka_bridge import metrics
from kafka_bridge.offsets import OffsetTracker

THREADS = 8
RECORDS = 4000
JOIN_SECONDS = 30.0


def _run_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert not any(thread.is_alive() for thread in threads)


def test_the_commit_offset_never_passes_a_record_still_in_flight() -> None:
    tracker = OffsetTracker()
    offsets = list(range(RECORDS))
    for offset in offsets:
        tracker.track("t", 0, offset)
    shuffled = offsets[:]
    random.Random(11).shuffle(shuffled)
    finished: set[int] = set()
    finished_lock = threading.Lock()
    violations: list[tuple[int, int]] = []
    stop_watching = threading.Event()

    def work(share: list[int]) -> None:
        for offset in share:
            claim = tracker.begin("t", 0)
            assert claim is not None
            # Noted before the tracker hears of it, so the watcher never
            # sees the tracker ahead of this set.
            with finished_lock:
                finished.add(offset)
            tracker.finish(claim, offset, done=True)

    def watch() -> None:
        # Whatever the tracker offers, every offset below it is finished.
        for _ in range(100_000):
            if stop_watching.is_set():
                return
            commit = tracker.committable().get(("t", 0), 0)
            with finished_lock:
                unfinished = [o for o in range(commit) if o not in finished]
            if unfinished:
                violations.append((commit, unfinished[0]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    _run_all(
        [
            threading.Thread(target=work, args=(shuffled[i::THREADS],))
            for i in range(THREADS)
        ]
    )
    stop_watching.set()
    watcher.join(JOIN_SECONDS)

    assert violations == []
    assert tracker.committable() == {("t", 0): RECORDS}
    assert tracker.pending_count() == 0


def test_counters_incremented_from_many_threads_add_up() -> None:
    """Through the cache of series the bridge counts with, as it does."""
    registry = CollectorRegistry()
    counter = Counter("updates", "test counter", ["lane"], registry=registry)

    def work(lane: str) -> None:
        for _ in range(RECORDS):
            metrics.child(counter, lane).inc()

    _run_all(
        [
            threading.Thread(target=work, args=(str(i % 2),))
            for i in range(THREADS)
        ]
    )

    total = sum(
        registry.get_sample_value("updates_total", {"lane": lane}) or 0
        for lane in ("0", "1")
    )
    assert total == THREADS * RECORDS


def test_a_cached_series_is_the_one_labels_gives() -> None:
    registry = CollectorRegistry()
    counter = Counter("posts", "test counter", ["endpoint"], registry=registry)

    metrics.child(counter, "primary").inc()
    metrics.child(counter, "primary").inc()
    metrics.child(counter, "secondary").inc()

    assert metrics.child(counter, "primary") is counter.labels("primary")
    assert registry.get_sample_value("posts_total", {"endpoint": "primary"}) == 2
