"""A worker turn that fails unexpectedly releases the records it held.

An exception no step expects (a bug in a transform, a metrics write that
fails) ends the worker's turn. Its records must neither be committed nor
stay claimed: a claim left open holds a revoke for its whole timeout and
a stop for the workers' deadline. These tests run the worker pool, the
lanes and the offset tracker of the bridge against a local HTTP API; the
records are made in the test, since no broker is involved in the turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kafka_bridge.bridge import failover_delivery
from kafka_bridge.delivery import HttpSender
from kafka_bridge.lanes import Lanes
from kafka_bridge.offsets import OffsetTracker
from kafka_bridge.records import Record
from kafka_bridge.transforms import Transform, envelope
from kafka_bridge.workers import Batching, WorkerPool
from tests.pipeline_support import bridge_settings
from tools.local_api import LocalApi

TOPIC = "orders"
KEY = (TOPIC, 0)
SETTLE_SECONDS = 10.0

pytestmark = pytest.mark.usefixtures("restore_logging")


class TransformBug(Exception):
    """What a bug in a transform raises: nothing the workers expect."""


def _failing_at(bad_offset: int) -> Transform:
    def transform(record: Record) -> bytes:
        if record.offset == bad_offset:
            raise TransformBug(f"offset {record.offset}")
        return envelope(record)

    return transform


def _records(count: int) -> list[Record]:
    return [
        Record(TOPIC, 0, offset, b"customer-1", b'{"n": %d}' % offset)
        for offset in range(count)
    ]


@contextmanager
def _pool(
    api: LocalApi, transform: Transform, batching: Batching | None
) -> Iterator[tuple[Lanes, OffsetTracker]]:
    settings = bridge_settings("127.0.0.1:9", TOPIC, api.url)
    sender = HttpSender(settings.api, pool_size=1)
    lanes = Lanes("key", workers=1, capacity=100)
    tracker = OffsetTracker()
    pool = WorkerPool(
        lanes, tracker, transform, failover_delivery(settings, sender),
        size=1, batching=batching,
    )
    pool.start()
    try:
        yield lanes, tracker
    finally:
        pool.stop_taking()
        pool.join(SETTLE_SECONDS)
        sender.close()


def _hand_out(
    lanes: Lanes, tracker: OffsetTracker, records: list[Record]
) -> None:
    tracker.track_all([(r.topic, r.partition, r.offset) for r in records])
    assert lanes.put(records) == len(records)


def test_a_record_failing_unexpectedly_is_released_uncommitted(
    api: LocalApi,
) -> None:
    records = _records(5)

    with _pool(api, _failing_at(2), batching=None) as (lanes, tracker):
        _hand_out(lanes, tracker, records)

        settled = tracker.wait_settled([KEY], SETTLE_SECONDS)
        idle = tracker.wait_idle([KEY], SETTLE_SECONDS)
        position = tracker.positions()[KEY]

    assert settled and idle, "a claim was left open"
    assert position == 2, "the failed record must hold the commit back"
    delivered = [request.json()["offset"] for request in api.received()]
    assert sorted(delivered) == [0, 1, 3, 4]


def test_a_batch_failing_unexpectedly_releases_all_its_records(
    api: LocalApi,
) -> None:
    batching = Batching(
        max_records=10, max_bytes=1 << 20, max_wait_seconds=0.2,
        batch_format="json_array",
    )

    with _pool(api, _failing_at(3), batching) as (lanes, tracker):
        _hand_out(lanes, tracker, _records(6))
        settled = tracker.wait_settled([KEY], SETTLE_SECONDS)
        idle = tracker.wait_idle([KEY], SETTLE_SECONDS)

        _hand_out(lanes, tracker, [Record(TOPIC, 0, 6, b"k", b"{}")])
        delivered_after = api.wait_for_count(1, SETTLE_SECONDS)
        position = tracker.positions()[KEY]

    assert settled and idle, "a claim was left open"
    assert delivered_after, "the worker did not go on after the failure"
    assert position == 0, "the failed batch must hold the commit back"
    assert [r["offset"] for r in api.received()[0].json()] == [6]
