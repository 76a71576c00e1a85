"""Transforms turn a record into a request body, or say why they cannot."""

from __future__ import annotations

import base64
import json

import pytest

from kafka_bridge.errors import ConfigError, DecodeError, TransformError
from kafka_bridge.records import Record
from kafka_bridge.transforms import envelope, load_transform, passthrough


def _record(value: bytes | None, key: bytes | None = b"k-1") -> Record:
    return Record(
        topic="orders",
        partition=3,
        offset=42,
        key=key,
        value=value,
        timestamp_ms=1_700_000_000_000,
    )


def test_envelope_wraps_the_decoded_value_with_its_coordinates() -> None:
    body = envelope(_record(b'{"id": 7, "name": "caf\xc3\xa9"}'))

    assert json.loads(body) == {
        "topic": "orders",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1_700_000_000_000,
        "key": "k-1",
        "key_encoding": "utf-8",
        "value": {"id": 7, "name": "café"},
    }


def test_envelope_sends_the_value_as_it_was_written() -> None:
    value = b'{"id": 18446744073709551617, "total": 1.10, "e": "\\u00e9"}'

    body = envelope(_record(value))

    assert body.endswith(b',"value":' + value + b"}")
    assert json.loads(body)["value"]["id"] == 18446744073709551617


def test_envelope_of_a_value_written_on_several_lines_is_one_line() -> None:
    value = b'{\r\n  "id": 7,\n  "note": "a\\nb"\n}\n'

    body = envelope(_record(value))

    assert b"\n" not in body and b"\r" not in body
    assert json.loads(body)["value"] == {"id": 7, "note": "a\nb"}


def test_envelope_sends_a_binary_key_as_base64() -> None:
    key = b"\xff\x00\xfe"

    body = json.loads(envelope(_record(b"1", key=key)))

    assert body["key_encoding"] == "base64"
    assert base64.b64decode(body["key"]) == key


def test_envelope_refuses_a_value_that_is_not_json() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        envelope(_record(b"{not json"))


def test_envelope_refuses_a_value_that_is_not_utf8() -> None:
    with pytest.raises(DecodeError, match="not UTF-8"):
        envelope(_record(b'"\xff\xfe"'))


def test_envelope_refuses_a_tombstone() -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        envelope(_record(None))


def test_passthrough_posts_the_value_unchanged() -> None:
    assert passthrough(_record(b"raw \x00 bytes")) == b"raw \x00 bytes"


def test_a_user_function_result_is_encoded_as_json() -> None:
    transform = load_transform("tests.sample_transforms.shapes:upper_name")

    body = transform(_record(b'{"name": "ada"}'))

    assert json.loads(body) == {"name": "ADA", "offset": 42}


def test_a_user_function_returning_bytes_is_posted_as_they_are() -> None:
    transform = load_transform("tests.sample_transforms.shapes:as_bytes")

    assert transform(_record(b"{}")) == b"orders:42"


def test_an_exception_in_a_user_function_becomes_a_transform_error() -> None:
    transform = load_transform("tests.sample_transforms.shapes:explode")

    with pytest.raises(TransformError, match="KeyError"):
        transform(_record(b"{}"))


def test_a_user_function_returning_no_json_is_a_transform_error() -> None:
    transform = load_transform("tests.sample_transforms.shapes:not_json")

    with pytest.raises(TransformError, match="not JSON"):
        transform(_record(b"{}"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tests.sample_transforms.nowhere:f", "could not be imported"),
        ("tests.sample_transforms.shapes:missing", "has no function"),
    ],
)
def test_a_user_function_that_cannot_be_found_is_a_config_error(
    name: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_transform(name)

    problem = caught.value.problems[0]
    assert problem.path == "pipeline.transform"
    assert problem.value == name
    assert expected in problem.fix
