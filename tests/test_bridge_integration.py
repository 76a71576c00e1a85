"""The bridge end to end: a real broker, a real HTTP server, real threads."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    bridge_settings,
    committed_offsets,
    ids_received,
    produce,
    running,
)
from tools.local_api import LocalApi

pytestmark = pytest.mark.kafka


def _bodies(api: LocalApi) -> list[dict[str, object]]:
    return [request.json() for request in api.received()]


@pytest.mark.parametrize("partitions", [1, 6])
def test_every_record_reaches_the_api_exactly_once_and_is_committed(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi, partitions: int
) -> None:
    topic = new_topic(partitions)
    produced = produce(kafka_bootstrap, topic, 600)
    settings = bridge_settings(kafka_bootstrap, topic, api.url)

    with running(settings):
        assert api.wait_for_count(len(produced), WAIT_SECONDS)

    received = ids_received(_bodies(api))
    assert sorted(received) == sorted(p.record_id for p in produced)
    committed = committed_offsets(
        kafka_bootstrap, settings.kafka.group_id, topic, partitions
    )
    end_offsets = {
        p: 1 + max(r.offset for r in produced if r.partition == p)
        for p in range(partitions)
    }
    assert committed == end_offsets


def test_each_request_carries_its_coordinates_as_idempotency_key(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic = new_topic(1)
    produce(kafka_bootstrap, topic, 3)

    with running(bridge_settings(kafka_bootstrap, topic, api.url)):
        assert api.wait_for_count(3, WAIT_SECONDS)

    keys = sorted(r.headers["Idempotency-Key"] for r in api.received())
    assert keys == [f"{topic}/0/{offset}" for offset in range(3)]


def test_a_lone_record_is_handed_on_without_waiting_for_a_full_batch(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    """The poll thread waits for one record, not for `batch_size` of
    them: a record arriving alone reaches the API long before the poll
    timeout is up."""
    topic = new_topic(1)
    settings = bridge_settings(
        kafka_bootstrap, topic, api.url,
        pipeline={"batch_size": 500, "poll_timeout_seconds": 3},
    )

    with running(settings):
        started = time.monotonic()
        produce(kafka_bootstrap, topic, 1)
        arrived = api.wait_for_count(1, WAIT_SECONDS)
        seconds = time.monotonic() - started

    assert arrived
    assert seconds < 1.5


def test_a_queue_that_stays_full_pauses_the_partitions_and_loses_nothing(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    """One worker that needs half a second a record keeps a one-record
    queue full for longer than the second the poll thread waits before it
    pauses."""
    topic = new_topic(2)
    produced = produce(kafka_bootstrap, topic, 8)
    api.respond_with(200, delay_seconds=0.5)
    pauses_before = _sample("kafka_bridge_partition_pauses_total")
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        pipeline={"queue_capacity": 1, "workers": 1, "batch_size": 50},
    )

    with running(settings):
        assert api.wait_for_count(len(produced), WAIT_SECONDS)

    assert _sample("kafka_bridge_partition_pauses_total") > pauses_before
    assert sorted(ids_received(_bodies(api))) == sorted(
        p.record_id for p in produced
    )


def test_a_refused_record_is_retried_until_the_api_accepts_it(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic = new_topic(1)
    produce(kafka_bootstrap, topic, 1)
    api.respond_with(503, count=3)

    with running(bridge_settings(kafka_bootstrap, topic, api.url)):
        assert api.wait_for_count(4, WAIT_SECONDS)

    assert [r.json()["value"]["id"] for r in api.received()] == ["r-000000"] * 4


def test_a_record_that_cannot_be_transformed_is_never_committed(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic = new_topic(1)
    produced = produce(kafka_bootstrap, topic, 5, values={2: b"{not json"})
    settings = bridge_settings(kafka_bootstrap, topic, api.url)

    with running(settings):
        assert api.wait_for_count(4, WAIT_SECONDS)

    assert len(ids_received(_bodies(api))) == 4
    committed = committed_offsets(
        kafka_bootstrap, settings.kafka.group_id, topic, 1
    )
    assert committed == {0: produced[2].offset}


@pytest.mark.parametrize("ordering", ["key", "partition", "none"])
def test_a_stop_mid_run_delivers_a_prefix_so_a_restart_repeats_nothing(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    ordering: str,
) -> None:
    topic = new_topic(3)
    produced = produce(kafka_bootstrap, topic, 400)
    api.respond_with(200, delay_seconds=0.01)
    # A small queue and consume batch, so the stop leaves records unread.
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        pipeline={
            "workers": 3,
            "ordering": ordering,
            "queue_capacity": 30,
            "batch_size": 20,
        },
    )

    with running(settings) as bridge:
        assert api.wait_for_count(60, WAIT_SECONDS)
        assert bridge.stop(), "the stop was cut short"
    first_run = ids_received(_bodies(api))

    committed = committed_offsets(
        kafka_bootstrap, settings.kafka.group_id, topic, 3
    )
    below_commit = {
        p.record_id for p in produced if p.offset < committed[p.partition]
    }
    assert len(first_run) < len(produced), "the stop came after the end"
    assert sorted(first_run) == sorted(below_commit)

    api.reset_behaviour()
    with running(settings):
        assert api.wait_for_count(len(produced), WAIT_SECONDS)
    assert sorted(ids_received(_bodies(api))) == sorted(
        p.record_id for p in produced
    )


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0
