"""The lanes between the poll thread and the workers: order, bounds, and
waking the thread that waits."""

from __future__ import annotations

import threading

import pytest

from kafka_bridge import batches
from kafka_bridge.lanes import Lanes
from kafka_bridge.records import Record

# Long enough that a wait which should end early cannot end by timing out
# within the test's own bound.
_LONG_WAIT_SECONDS = 30.0
_JOIN_SECONDS = 10.0


def _record(partition: int, offset: int, key: bytes | None = None) -> Record:
    return Record("orders", partition, offset, key, b"{}")


def _lane_worker(lanes: Lanes, record: Record, workers: int) -> int:
    """The worker whose lane the record went to."""
    for worker in range(workers):
        taken = lanes.take(worker, 1, 0)
        if taken:
            assert taken == [record]
            return worker
    raise AssertionError("the record is in no lane")


def test_records_of_one_key_come_out_of_one_lane_in_offset_order() -> None:
    lanes = Lanes("key", workers=4, capacity=100)
    records = [_record(0, offset, b"customer-7") for offset in range(10)]

    assert lanes.put(records) == 10

    worker = _lane_worker(lanes, records[0], 4)
    assert lanes.take(worker, 100, 0) == records[1:]


def test_under_partition_ordering_keys_do_not_split_a_partition() -> None:
    lanes = Lanes("partition", workers=4, capacity=100)
    records = [
        _record(3, offset, f"key-{offset}".encode()) for offset in range(8)
    ]

    lanes.put(records)

    worker = _lane_worker(lanes, records[0], 4)
    assert lanes.take(worker, 100, 0) == records[1:]


def test_put_stops_at_the_first_record_whose_lane_is_full() -> None:
    lanes = Lanes("none", workers=2, capacity=3)
    records = [_record(0, offset) for offset in range(5)]

    assert lanes.put(records) == 3
    assert lanes.qsize() == 3
    assert lanes.room() == 0
    assert lanes.put(records[3:]) == 0


def test_take_returns_what_is_there_up_to_the_most_asked_for() -> None:
    lanes = Lanes("none", workers=2, capacity=10)
    records = [_record(0, offset) for offset in range(5)]
    lanes.put(records)

    assert lanes.take(0, 3, 0) == records[:3]
    assert lanes.take(1, 3, 0) == records[3:]
    assert lanes.take(0, 3, 0) == []
    assert lanes.room() == 10


def test_a_waiting_worker_is_woken_by_records_put_on_its_lane() -> None:
    lanes = Lanes("none", workers=1, capacity=10)
    taken: list[Record] = []
    worker = threading.Thread(
        target=lambda: taken.extend(lanes.take(0, 10, _LONG_WAIT_SECONDS))
    )
    worker.start()

    lanes.put([_record(0, 0)])
    worker.join(_JOIN_SECONDS)

    assert not worker.is_alive()
    assert taken == [_record(0, 0)]


def test_the_poll_thread_waiting_for_room_is_woken_by_a_take() -> None:
    lanes = Lanes("none", workers=1, capacity=1)
    lanes.put([_record(0, 0)])
    waited: list[bool] = []
    poller = threading.Thread(
        target=lambda: waited.append(
            lanes.wait_for_room(_record(0, 1), _LONG_WAIT_SECONDS)
        )
    )
    poller.start()

    lanes.take(0, 1, 0)
    poller.join(_JOIN_SECONDS)

    assert not poller.is_alive()
    assert waited == [True]


def test_waiting_for_room_in_a_full_lane_times_out_false() -> None:
    lanes = Lanes("none", workers=1, capacity=1)
    lanes.put([_record(0, 0)])

    assert lanes.wait_for_room(_record(0, 1), 0.01) is False


def test_an_unknown_ordering_is_refused() -> None:
    with pytest.raises(ValueError, match="ordering must be one of"):
        Lanes("random", workers=2, capacity=10)


def test_collect_gathers_a_batch_from_several_takes() -> None:
    lanes = Lanes("none", workers=1, capacity=100)
    records = [_record(0, offset) for offset in range(7)]
    lanes.put(records[:4])
    takes: list[int] = []

    def take(most: int, timeout_seconds: float) -> list[Record]:
        takes.append(most)
        if len(takes) == 2:
            lanes.put(records[4:])
        return lanes.take(0, most, timeout_seconds)

    batch = batches.collect(
        take, max_records=6, max_wait_seconds=0.0, idle_seconds=0.0
    )

    assert batch == records[:6]
    assert takes == [6, 2]


def test_collect_stops_when_nothing_more_comes_in_time() -> None:
    lanes = Lanes("none", workers=1, capacity=100)
    lanes.put([_record(0, 0), _record(0, 1)])

    batch = batches.collect(
        lambda most, timeout: lanes.take(0, most, timeout),
        max_records=100,
        max_wait_seconds=0.01,
        idle_seconds=0.0,
    )

    assert batch == [_record(0, 0), _record(0, 1)]


def test_collect_returns_nothing_from_an_idle_lane() -> None:
    lanes = Lanes("none", workers=1, capacity=100)

    assert batches.collect(
        lambda most, timeout: lanes.take(0, most, timeout),
        max_records=100,
        max_wait_seconds=1.0,
        idle_seconds=0.0,
    ) == []
