"""The dedup cache remembers recent keys in bounded memory, and the key
extractors turn a `dedup.key` setting into a record's key."""

from __future__ import annotations

import hashlib
import threading

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_bridge.dedup import DedupCache, key_extractor
from kafka_bridge.records import Record
from tests.manual_clock import ManualClock

CAPACITY = 4
MAX_AGE_SECONDS = 60.0
THREAD_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def cache(clock: ManualClock) -> DedupCache:
    return DedupCache(CAPACITY, MAX_AGE_SECONDS, clock)


def _keys(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{index}".encode() for index in range(count)]


def _record(
    *,
    key: bytes | None = None,
    value: bytes | None = None,
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> Record:
    return Record("orders", 0, 42, key, value, headers)


def test_a_key_that_was_added_is_seen(cache: DedupCache) -> None:
    cache.add(b"order-1")

    assert cache.seen(b"order-1")


def test_a_key_that_was_never_added_is_not_seen(cache: DedupCache) -> None:
    cache.add(b"order-1")

    assert not cache.seen(b"order-2")


def test_filling_the_current_generation_keeps_it_visible_as_previous(
    cache: DedupCache,
) -> None:
    first = _keys("first", CAPACITY)

    for key in first:
        cache.add(key)

    assert cache.rotations == 1
    assert all(cache.seen(key) for key in first)


def test_filling_it_twice_drops_the_generation_before_the_previous(
    cache: DedupCache,
) -> None:
    first, second = _keys("first", CAPACITY), _keys("second", CAPACITY)

    for key in first + second:
        cache.add(key)

    assert cache.rotations == 2
    assert not any(cache.seen(key) for key in first)
    assert all(cache.seen(key) for key in second)


def test_an_old_generation_becomes_previous_and_stays_visible(
    cache: DedupCache, clock: ManualClock
) -> None:
    cache.add(b"early")

    clock.now += MAX_AGE_SECONDS
    cache.add(b"later")

    assert cache.rotations == 1
    assert cache.seen(b"early")
    assert cache.seen(b"later")


def test_a_key_is_forgotten_after_two_generations_of_age(
    cache: DedupCache, clock: ManualClock
) -> None:
    cache.add(b"early")
    clock.now += MAX_AGE_SECONDS
    remembered_one_age_later = cache.seen(b"early")

    clock.now += MAX_AGE_SECONDS

    assert remembered_one_age_later
    assert not cache.seen(b"early")
    assert cache.rotations == 2


def test_a_key_is_remembered_for_the_whole_max_age(
    cache: DedupCache, clock: ManualClock
) -> None:
    clock.now += MAX_AGE_SECONDS - 1.0
    cache.add(b"added-late-in-its-generation")

    clock.now += MAX_AGE_SECONDS

    assert cache.seen(b"added-late-in-its-generation")


def test_adding_a_remembered_key_again_refreshes_it(
    cache: DedupCache, clock: ManualClock
) -> None:
    cache.add(b"hot")
    clock.now += MAX_AGE_SECONDS
    cache.add(b"hot")

    clock.now += MAX_AGE_SECONDS

    assert cache.seen(b"hot")


def test_the_counters_count_hits_additions_and_rotations(
    cache: DedupCache,
) -> None:
    for key in _keys("k", CAPACITY + 1):
        cache.add(key)

    for key in [b"k-0", b"k-4", b"absent", b"k-0"]:
        cache.seen(key)

    assert cache.additions == CAPACITY + 1
    assert cache.hits == 3
    assert cache.rotations == 1


def test_the_length_counts_both_generations(cache: DedupCache) -> None:
    for key in _keys("k", CAPACITY + 2):
        cache.add(key)

    assert len(cache) == CAPACITY + 2


@pytest.mark.parametrize(
    ("capacity", "max_age_seconds", "named"),
    [(0, 1.0, "capacity"), (1, 0.0, "max_age_seconds")],
)
def test_bad_arguments_are_refused_by_name(
    capacity: int, max_age_seconds: float, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        DedupCache(capacity, max_age_seconds)


@settings(max_examples=100, deadline=None)
@given(
    added=st.sets(st.binary(max_size=24), max_size=50),
    probes=st.sets(st.binary(max_size=24), max_size=50),
)
def test_no_key_outside_the_added_ones_is_seen(
    added: set[bytes], probes: set[bytes]
) -> None:
    """With 128-bit digests a false "seen" needs a hash collision, which
    is far too unlikely to ever show up here."""
    cache = DedupCache(capacity=100, max_age_seconds=MAX_AGE_SECONDS)
    for key in added:
        cache.add(key)

    never_added = probes - added

    assert not any(cache.seen(key) for key in never_added)
    assert all(cache.seen(key) for key in added)


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(1, 20),
    keys=st.lists(st.binary(max_size=8), max_size=200),
    ticks=st.lists(st.floats(0.0, 30.0), max_size=200),
)
def test_the_size_never_exceeds_twice_the_capacity(
    capacity: int, keys: list[bytes], ticks: list[float]
) -> None:
    clock = ManualClock()
    cache = DedupCache(capacity, MAX_AGE_SECONDS, clock)

    for index, key in enumerate(keys):
        clock.now += ticks[index] if index < len(ticks) else 0.0
        cache.add(key)

        assert len(cache) <= 2 * capacity


def test_threads_adding_distinct_keys_see_each_of_their_own_at_once() -> None:
    thread_count, keys_per_thread = 4, 1_000
    # A key is dropped only after `capacity` additions that follow it. With
    # more than the other threads make in all, a thread's key cannot be
    # dropped before it looks, however the threads are scheduled; the
    # cache still rotates once while they race.
    capacity = (thread_count - 1) * keys_per_thread + 1
    cache = DedupCache(capacity, MAX_AGE_SECONDS)
    start = threading.Barrier(thread_count)
    missed: list[bytes] = []
    sizes: list[int] = []
    failures: list[BaseException] = []

    def add_and_check(prefix: str) -> None:
        try:
            start.wait(THREAD_TIMEOUT_SECONDS)
            for key in _keys(prefix, keys_per_thread):
                cache.add(key)
                if not cache.seen(key):
                    missed.append(key)
                sizes.append(len(cache))
        except BaseException as error:
            failures.append(error)
            raise

    threads = [
        threading.Thread(target=add_and_check, args=(f"t{index}",))
        for index in range(thread_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)

    assert failures == []
    assert missed == []
    assert len(sizes) == thread_count * keys_per_thread
    assert max(sizes) <= 2 * capacity
    assert cache.additions == thread_count * keys_per_thread
    assert cache.rotations == 1


def test_the_key_form_takes_the_record_key() -> None:
    extract = key_extractor("key")

    assert extract(_record(key=b"order-7")) == b"order-7"
    assert extract(_record(key=None)) is None


def test_the_header_form_takes_that_headers_first_value() -> None:
    extract = key_extractor("header:event-id")
    headers = (
        ("trace", b"t-1"),
        ("event-id", b"e-1"),
        ("event-id", b"e-2"),
    )

    assert extract(_record(headers=headers)) == b"e-1"
    assert extract(_record(headers=(("trace", b"t-1"),))) is None


def test_the_field_form_takes_the_json_value_at_the_path() -> None:
    extract = key_extractor("field:order.id")
    value = orjson.dumps({"order": {"id": 17, "lines": []}})

    assert extract(_record(value=value)) == b"17"


def test_the_field_form_serialises_objects_with_sorted_keys() -> None:
    extract = key_extractor("field:id")
    one = b'{"id": {"b": 2, "a": 1}}'
    other = b'{"id": {"a": 1, "b": 2}}'

    assert extract(_record(value=one)) == b'{"a":1,"b":2}'
    assert extract(_record(value=one)) == extract(_record(value=other))


@pytest.mark.parametrize(
    "value",
    [
        b'{"order": {"number": 17}}',
        b'{"order": 17}',
        b'{"order": {"id": null}}',
        b'["order"]',
        b"not json",
        None,
    ],
)
def test_the_field_form_gives_no_key_when_the_field_is_missing(
    value: bytes | None,
) -> None:
    extract = key_extractor("field:order.id")

    assert extract(_record(value=value)) is None


def test_the_value_hash_form_digests_the_raw_value() -> None:
    extract = key_extractor("value_hash")
    value = b'{"any": "payload"}'
    expected = hashlib.blake2b(value, digest_size=16).digest()

    assert extract(_record(value=value)) == expected
    assert extract(_record(value=None)) is None


@pytest.mark.parametrize(
    "spec",
    ["", "keys", "key:", "header:", "field:", "field:a..b", "hash", "body"],
)
def test_a_bad_key_form_is_refused_naming_the_setting_and_the_forms(
    spec: str,
) -> None:
    with pytest.raises(ValueError) as caught:
        key_extractor(spec)

    message = str(caught.value)
    assert "dedup.key" in message
    assert repr(spec) in message
    assert "header:NAME" in message and "field:a.b.c" in message
