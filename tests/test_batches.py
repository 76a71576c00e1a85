"""Batch mode: many records per POST, and only the bad ones dead-lettered."""

from __future__ import annotations

import json

import pytest

from kafka_bridge import batches
from kafka_bridge.records import Record
from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    bridge_settings,
    committed_total,
    produce,
    read_topic,
    running,
    wait_until,
)
from tools.local_api import LocalApi


def _record(offset: int) -> Record:
    return Record("orders", 2, offset, None, b"{}")


def test_a_json_array_batch_is_the_payloads_joined() -> None:
    body = batches.encode([b'{"a":1}', b"[2]", b'"x"'], "json_array")

    assert json.loads(body) == [{"a": 1}, [2], "x"]


def test_an_ndjson_batch_has_one_payload_per_line() -> None:
    body = batches.encode([b'{"a":1}', b'{"b":2}\n'], "ndjson")

    assert body == b'{"a":1}\n{"b":2}\n'


def test_a_batch_key_names_its_first_and_last_records() -> None:
    assert batches.batch_key(_record(7), _record(9)) == "orders/2/7..orders/2/9"


def test_batches_are_split_by_size_and_a_large_item_goes_alone() -> None:
    ranges = list(batches.by_size([400, 400, 400, 5000, 10], max_bytes=1000))

    assert ranges == [(0, 2), (2, 3), (3, 4), (4, 5)]


def _received_ids(api: LocalApi) -> list[str]:
    ids = []
    for request in api.received():
        for payload in request.json():
            ids.append(payload["value"]["id"])
    return ids


@pytest.mark.kafka
def test_batch_mode_delivers_every_record_exactly_once(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic = new_topic(3)
    produced = produce(kafka_bootstrap, topic, 500)
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        delivery={"mode": "batch", "batch_max_records": 50},
    )

    with running(settings):
        assert wait_until(lambda: len(_received_ids(api)) >= 500)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, settings, topic) == 500
        )

    assert sorted(_received_ids(api)) == sorted(p.record_id for p in produced)
    assert all(len(r.json()) <= 50 for r in api.received())
    assert len(api.received()) < 500 // 5
    assert all(".." in r.headers["Idempotency-Key"] for r in api.received())


@pytest.mark.kafka
def test_a_refused_batch_is_bisected_to_dead_letter_only_the_bad_record(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic, dlq = new_topic(1), new_topic(1)
    produced = produce(kafka_bootstrap, topic, 8)
    # Refuse the batch of 8, then its first half of 4, of 2, and the
    # first record alone: only that record is dead-lettered.
    api.respond_with(400, count=4)
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        delivery={
            "mode": "batch",
            "batch_max_records": 8,
            "batch_max_wait_ms": 2000,
        },
        dlq={"topic": dlq},
        pipeline={"workers": 1, "ordering": "partition"},
    )

    with running(settings):
        letters = read_topic(kafka_bootstrap, dlq, 1, WAIT_SECONDS)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, settings, topic) == 8
        )

    sizes = [len(r.json()) for r in api.received()]
    assert sizes == [8, 4, 2, 1, 1, 2, 4]
    assert [letter.key for letter in letters] == [b"r-000000"]
    delivered = [
        payload["value"]["id"]
        for request in api.received()[4:]
        for payload in request.json()
    ]
    assert sorted(delivered) == [p.record_id for p in produced[1:]]


@pytest.mark.kafka
def test_an_ndjson_batch_is_sent_with_its_content_type(
    kafka_bootstrap: str, new_topic: NewTopicFactory, api: LocalApi
) -> None:
    topic = new_topic(1)
    produce(kafka_bootstrap, topic, 10)
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        delivery={"mode": "batch", "batch_format": "ndjson"},
    )

    with running(settings):
        assert wait_until(lambda: sum(
            len(r.body.splitlines()) for r in api.received()
        ) >= 10)

    first = api.received()[0]
    assert first.headers["Content-Type"] == "application/x-ndjson"
    lines = b"".join(r.body for r in api.received()).splitlines()
    assert sorted(json.loads(line)["value"]["id"] for line in lines) == [
        f"r-{n:06d}" for n in range(10)
    ]
