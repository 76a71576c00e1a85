"""Bad records are dead-lettered with their reason; good ones still arrive.

Records that cannot become an envelope (invalid JSON, invalid UTF-8, an
empty value, a tombstone) or whose envelope breaks the API's contract go
to the dead-letter topic with the stage and reason that docs/delivery.md
lists. Records that are unusual but good (no key, a value close to the
broker's size limit) are delivered. Either way the group's offsets reach
the end of the topic.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    Consumed,
    bridge_settings,
    committed_offsets,
    committed_total,
    ids_received,
    produce,
    read_topic,
    record_count,
    running,
    wait_until,
)
from tools.local_api import LocalApi

pytestmark = pytest.mark.kafka

ENVELOPE_SCHEMA = Path(__file__).resolve().parent / "contract" / (
    "envelope.schema.json"
)
# The local broker accepts records up to its default message.max.bytes of
# about 1 MiB; the producer's own limit must let such a record through.
PRODUCER_MESSAGE_MAX_BYTES = 1_048_576
NEAR_LIMIT_BLOB_CHARS = 900_000
GOOD_RECORDS = 40
HEADER = "kafka-bridge."


@dataclass(frozen=True)
class Poison:
    """A record the bridge must dead-letter, and what its letter says."""

    value: bytes | None
    stage: str
    error_class: str
    reason: str


POISONS = {
    "invalid-json": Poison(
        b"{not json", "decode", "DecodeError", "not valid JSON"
    ),
    "invalid-utf8": Poison(
        b'{"id": "caf\xe9"}', "decode", "DecodeError", "not UTF-8"
    ),
    "empty-value": Poison(b"", "decode", "DecodeError", "not valid JSON"),
    "tombstone": Poison(None, "decode", "DecodeError", "tombstone"),
    # The contract wants the id as a string.
    "breaks-contract": Poison(
        b'{"id": 5}', "contract", "ContractError", "$.value.id: breaks 'type'"
    ),
}


@dataclass(frozen=True)
class Outgoing:
    """A record to produce, under a name that says what it is."""

    name: str
    key: bytes | None
    value: bytes | None


def _good(record_id: str, *, key: bytes | None, **extra: Any) -> Outgoing:
    value = json.dumps({"id": record_id, **extra}).encode()
    return Outgoing(record_id, key, value)


def _records() -> list[Outgoing]:
    """Good records with the bad and the unusual spread among them."""
    records = [
        _good(f"good-{index:03d}", key=f"k-{index}".encode())
        for index in range(GOOD_RECORDS)
    ]
    unusual = [
        _good("null-key", key=None),
        _good(
            "near-limit",
            key=b"big",
            blob="x" * NEAR_LIMIT_BLOB_CHARS,
        ),
    ]
    bad = [
        Outgoing(name, f"bad-{name}".encode(), poison.value)
        for name, poison in POISONS.items()
    ]
    for step, record in enumerate(unusual + bad):
        records.insert(5 * step + 3, record)
    return records


def _produce_exactly(
    bootstrap: str, topic: str, records: list[Outgoing]
) -> dict[str, int]:
    """Produce the records as they are, null keys and values included,
    to partition 0; the offset of each, by name."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
        }
    )
    offsets: dict[str, int] = {}
    errors: list[str] = []

    def on_delivery(name: str, error: Any, message: Any) -> None:
        if error is not None:
            errors.append(f"{name}: {error}")
            return
        offsets[name] = message.offset()

    for record in records:
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            partition=0,
            on_delivery=functools.partial(on_delivery, record.name),
        )
        producer.poll(0)

    remaining = producer.flush(WAIT_SECONDS)
    assert remaining == 0 and not errors, (remaining, errors[:3])
    return offsets


def _contract_for_ids(tmp_path: Path) -> str:
    """The envelope schema, with the API's rule that an id is a string."""
    schema = json.loads(ENVELOPE_SCHEMA.read_text())
    schema["properties"]["value"] = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string"}},
    }
    path = tmp_path / "ids.schema.json"
    path.write_text(json.dumps(schema))
    return str(path)


def _bodies(api: LocalApi) -> dict[str, dict[str, Any]]:
    """The envelopes the API received, by record id."""
    bodies = (request.json() for request in api.received())
    return {body["value"]["id"]: body for body in bodies}


def _by_original_offset(letters: list[Consumed]) -> dict[int, Consumed]:
    return {
        int(letter.headers[HEADER + "original.offset"]): letter
        for letter in letters
    }


def test_bad_records_are_dead_lettered_and_good_ones_delivered(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
) -> None:
    topic, dlq = new_topic(1), new_topic(1)
    records = _records()
    offsets = _produce_exactly(kafka_bootstrap, topic, records)
    good_names = {r.name for r in records if r.name not in POISONS}
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        api={"contract_schema": _contract_for_ids(tmp_path)},
        dlq={"topic": dlq},
    )

    with running(settings):
        letters = read_topic(kafka_bootstrap, dlq, len(POISONS), WAIT_SECONDS)
        assert api.wait_for_count(len(good_names), WAIT_SECONDS)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, settings, topic)
            == len(records)
        )

    by_offset = _by_original_offset(letters)
    assert sorted(by_offset) == sorted(offsets[name] for name in POISONS)
    for name, poison in POISONS.items():
        letter = by_offset[offsets[name]]
        assert letter.headers[HEADER + "error.stage"] == poison.stage, name
        assert letter.headers[HEADER + "error.class"] == poison.error_class
        assert poison.reason in letter.headers[HEADER + "error.message"]
        assert letter.headers[HEADER + "original.topic"] == topic
        assert letter.headers[HEADER + "original.partition"] == "0"
        assert (letter.key, letter.value) == (
            f"bad-{name}".encode(),
            poison.value,
        ), name
    assert record_count(kafka_bootstrap, dlq) == len(POISONS)

    bodies = _bodies(api)
    assert sorted(ids_received([r.json() for r in api.received()])) == sorted(
        good_names
    )
    assert (bodies["null-key"]["key"], bodies["null-key"]["key_encoding"]) == (
        None,
        None,
    )
    near_limit = bodies["near-limit"]["value"]["blob"]
    assert near_limit == "x" * NEAR_LIMIT_BLOB_CHARS
    assert committed_offsets(
        kafka_bootstrap, settings.kafka.group_id, topic, 1
    ) == {0: len(records)}


def _good_record_rate(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    poison: dict[int, bytes],
    count: int,
) -> float:
    """Run the bridge over `count` records, `poison` among them, check
    that each is delivered or dead-lettered, and return the good records
    per second between the first and the last to reach the API."""
    topic, dlq = new_topic(2), new_topic(1)
    api.clear_received()
    produced = produce(kafka_bootstrap, topic, count, values=poison)
    good = {
        p.record_id for p in produced if int(p.record_id[2:]) not in poison
    }
    settings = bridge_settings(
        kafka_bootstrap, topic, api.url, dlq={"topic": dlq}
    )

    with running(settings):
        assert api.wait_for_count(len(good), WAIT_SECONDS)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, settings, topic) == count
        )

    assert sorted(ids_received([r.json() for r in api.received()])) == sorted(
        good
    )
    assert record_count(kafka_bootstrap, dlq) == len(poison)
    span = api.stats()["arrival_span_seconds"]
    assert isinstance(span, float)
    return len(good) / span if span > 0 else float("inf")


def test_good_records_keep_flowing_past_ten_percent_poison(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    record_property: Callable[[str, object], None],
) -> None:
    """Measures, and does not judge, how much poison slows good records:
    timing on a shared machine is no ground for a verdict. The figures go
    to the test report and, with `pytest -s`, to the output."""
    count = 300
    poison = {index: b"{broken" for index in range(0, count, 10)}

    clean = _good_record_rate(kafka_bootstrap, new_topic, api, {}, count)
    poisoned = _good_record_rate(
        kafka_bootstrap, new_topic, api, poison, count
    )

    record_property("good_records_per_second_clean", round(clean))
    record_property(
        "good_records_per_second_ten_percent_poison", round(poisoned)
    )
    print(
        f"\ngood records per second: {clean:.0f} clean, "
        f"{poisoned:.0f} with 10 % poison"
    )
