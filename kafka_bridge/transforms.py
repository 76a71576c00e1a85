"""Turning a Kafka record into the body of an HTTP request.

Three kinds of transform are offered: `envelope` wraps the decoded JSON value
with its Kafka coordinates, `passthrough` posts the value's bytes as they
are, and `package.module:function` names a user function. Every transform
returns the request body as bytes; a record that cannot be read raises
`DecodeError`, one the transform fails on `TransformError`, with the reason.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from typing import Any

import orjson

from kafka_bridge.errors import (
    ConfigError,
    ConfigProblem,
    DecodeError,
    RecordError,
    TransformError,
)
from kafka_bridge.records import Record

Transform = Callable[[Record], bytes]
UserFunction = Callable[[Record], Any]


def envelope(record: Record) -> bytes:
    """The JSON value wrapped with the record's coordinates.

    The value is parsed to check that it is JSON, then sent as it was
    written: encoding it again would cost CPU for nothing, and would round
    integers beyond 64 bits to floats. A key that is not UTF-8 text
    is sent as base64, flagged by `key_encoding`, so binary keys survive
    the trip into JSON.
    """
    value = _value_of(record)
    _check_json(value)
    key, key_encoding = _key_as_text(record.key)

    return orjson.dumps(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "key": key,
            "key_encoding": key_encoding,
            "value": orjson.Fragment(_on_one_line(value)),
        }
    )


def passthrough(record: Record) -> bytes:
    """The value's bytes, unchanged; a record without a value is refused."""
    return _value_of(record)


def from_user_function(function: UserFunction) -> Transform:
    """Adapt a user function: bytes pass as they are, anything else is
    encoded as JSON; any exception it raises becomes a TransformError."""

    def transform(record: Record) -> bytes:
        try:
            result = function(record)
        except RecordError:
            raise
        except Exception as error:
            raise TransformError(
                f"the transform raised {type(error).__name__}: {error}"
            ) from error
        if isinstance(result, bytes):
            return result
        try:
            return orjson.dumps(result)
        except TypeError as error:
            raise TransformError(
                f"the transform returned a value that is not JSON: {error}"
            ) from None

    return transform


BUILT_IN: dict[str, Transform] = {
    "envelope": envelope,
    "passthrough": passthrough,
}


def load_transform(name: str) -> Transform:
    """The built-in transform of that name, or the user function it names.

    Raises ConfigError when `package.module:function` cannot be imported or
    does not name a callable, so a typo stops start-up instead of every
    record.
    """
    if name in BUILT_IN:
        return BUILT_IN[name]

    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError([ConfigProblem(
            "pipeline.transform",
            rule="importable",
            value=name,
            fix=f"module {module_name!r} could not be imported "
            f"({type(error).__name__}: {error}); check the name and that it "
            "is installed where the bridge runs",
        )]) from None

    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError([ConfigProblem(
            "pipeline.transform",
            rule="callable",
            value=name,
            fix=f"module {module_name!r} has no function {function_name!r}",
        )])
    return from_user_function(function)


def _value_of(record: Record) -> bytes:
    if record.value is None:
        raise DecodeError("the record has no value (a tombstone)")
    return record.value


def _check_json(value: bytes) -> None:
    """DecodeError saying why, unless the value is JSON."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError as error:
        reason = (
            "not UTF-8" if "utf-8" in str(error).lower() else "not valid JSON"
        )
        raise DecodeError(f"the value is {reason}: {error}") from None


def _on_one_line(json_text: bytes) -> bytes:
    """Valid JSON text with its line breaks made spaces, so that an
    envelope is one line (NDJSON batches need that).

    In valid JSON a line break can only be whitespace between tokens: one
    inside a string must be escaped as `\\n`.
    """
    if b"\n" not in json_text and b"\r" not in json_text:
        return json_text
    return json_text.replace(b"\r", b" ").replace(b"\n", b" ")


def _key_as_text(key: bytes | None) -> tuple[str | None, str | None]:
    if key is None:
        return None, None
    try:
        return key.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(key).decode("ascii"), "base64"
