"""Remembering which records were already delivered, in bounded memory.

Kafka delivers at least once: after a rebalance or a restart, records
since the last commit are consumed again, and producers that retry write
some records twice. A record whose key was seen recently can be skipped
instead of delivered again. The memory is only recent on purpose: an
unbounded set would grow for as long as the bridge runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from kafka_bridge.records import Record

KeyExtractor = Callable[[Record], bytes | None]

# 128 bits: a false "seen" between two different keys needs a collision,
# which for a few million keys is far less likely than a hardware fault.
_DIGEST_SIZE_BYTES = 16

_SETTING = "dedup.key"
_ALLOWED_FORMS = "key, header:NAME, field:a.b.c or value_hash"


class DedupCache:
    """A thread-safe, two-generation set of recently seen keys.

    Lookups check both generations; additions go to the current one. When
    the current one holds `capacity` entries or is `max_age_seconds` old,
    it becomes the previous one, the old previous one is dropped and an
    empty current one starts. Memory is therefore bounded by 2 x capacity
    entries, and a key is remembered for at least the lesser of
    `capacity` further additions and `max_age_seconds`.

    Entries are 16-byte blake2b digests of the keys, not the keys, so an
    entry's size does not depend on how long a key is.
    """

    def __init__(
        self,
        capacity: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; got {capacity}")
        if not max_age_seconds > 0:
            raise ValueError(
                f"max_age_seconds must be above 0; got {max_age_seconds}"
            )

        self._capacity = capacity
        self._max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._started_at = clock()
        self._hits = 0
        self._additions = 0
        self._rotations = 0

    def seen(self, key: bytes) -> bool:
        """Was `key` added recently? Counts a hit when it was."""
        digest = _digest(key)

        with self._lock:
            self._rotate_if_old()
            found = digest in self._current or digest in self._previous
            if found:
                self._hits += 1
        return found

    def add(self, key: bytes) -> None:
        """Remember `key`; a key already known is remembered afresh."""
        digest = _digest(key)

        with self._lock:
            self._rotate_if_old()
            self._current.add(digest)
            self._additions += 1
            if len(self._current) >= self._capacity:
                self._rotate()

    def __len__(self) -> int:
        """Entries held in both generations; a key may be in each once."""
        with self._lock:
            return len(self._current) + len(self._previous)

    @property
    def hits(self) -> int:
        """How many lookups found their key."""
        return self._hits

    @property
    def additions(self) -> int:
        """How many times a key was added."""
        return self._additions

    @property
    def rotations(self) -> int:
        """How many times the current generation became the previous one."""
        return self._rotations

    def _rotate_if_old(self) -> None:
        age_seconds = self._clock() - self._started_at
        if age_seconds >= self._max_age_seconds:
            self._rotate()

    def _rotate(self) -> None:
        self._previous = self._current
        self._current = set()
        self._started_at = self._clock()
        self._rotations += 1


def key_extractor(spec: str) -> KeyExtractor:
    """The function that gives a record's dedup key, from the `dedup.key` text.

    - `key`: the record's key.
    - `header:NAME`: the first value of header NAME.
    - `field:a.b.c`: the JSON value at that path in the record's value,
      serialised with orjson with sorted object keys.
    - `value_hash`: a blake2b-128 digest of the raw value.

    A record without the chosen part (no key, no such header, a field that
    is missing or null, a value that is not JSON) has no dedup key: the
    extractor returns None and the record is never taken for a duplicate.
    Two records with no id are not the same record.
    """
    if spec == "key":
        return _record_key
    if spec == "value_hash":
        return _value_hash

    kind, separator, argument = spec.partition(":")
    if separator and kind == "header" and argument:
        return _header_extractor(argument)
    if separator and kind == "field":
        path = argument.split(".")
        if all(path):
            return _field_extractor(path)

    raise ValueError(
        f"{_SETTING}: {spec!r} is not a dedup key form; "
        f"use one of {_ALLOWED_FORMS}"
    )


def _record_key(record: Record) -> bytes | None:
    return record.key


def _value_hash(record: Record) -> bytes | None:
    if record.value is None:
        return None
    return _digest(record.value)


def _header_extractor(name: str) -> KeyExtractor:
    def first_header_value(record: Record) -> bytes | None:
        for header_name, value in record.headers:
            if header_name == name:
                return value
        return None

    return first_header_value


def _field_extractor(path: list[str]) -> KeyExtractor:
    def field_value(record: Record) -> bytes | None:
        if record.value is None:
            return None
        try:
            document = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return None

        found = _walk(document, path)
        if found is None:
            return None
        return orjson.dumps(found, option=orjson.OPT_SORT_KEYS)

    return field_value


def _walk(document: Any, path: list[str]) -> Any:
    """The value at `path` in nested JSON objects, or None if absent."""
    node = document
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE_BYTES).digest()
