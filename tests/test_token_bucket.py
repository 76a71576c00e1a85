"""The token bucket allows a burst of `capacity`, then `rate` per second,
and never grants more than capacity + rate * t over t seconds."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_bridge.token_bucket import TokenBucket
from tests.manual_clock import ManualClock

RATE_PER_SECOND = 4.0
CAPACITY = 5.0
THREAD_TIMEOUT_SECONDS = 10.0
# Float sums of refills may exceed the exact bound by rounding alone.
ROUNDING_SLACK = 1e-6


@pytest.fixture
def bucket(clock: ManualClock) -> TokenBucket:
    return TokenBucket(RATE_PER_SECOND, CAPACITY, clock)


def _drain(bucket: TokenBucket) -> int:
    taken = 0
    while bucket.try_acquire() and taken < 1000:
        taken += 1
    return taken


def test_a_new_bucket_holds_capacity_tokens(bucket: TokenBucket) -> None:
    assert _drain(bucket) == CAPACITY


def test_an_empty_bucket_refuses(bucket: TokenBucket) -> None:
    _drain(bucket)

    assert not bucket.try_acquire()


def test_tokens_come_back_at_the_rate(
    bucket: TokenBucket, clock: ManualClock
) -> None:
    _drain(bucket)

    clock.now += 0.5

    assert _drain(bucket) == 2


def test_a_long_idle_bucket_holds_no_more_than_capacity(
    bucket: TokenBucket, clock: ManualClock
) -> None:
    _drain(bucket)

    clock.now += 3600.0

    assert bucket.seconds_until_available(CAPACITY) == 0.0
    assert _drain(bucket) == CAPACITY


def test_several_tokens_are_taken_at_once_or_not_at_all(
    bucket: TokenBucket,
) -> None:
    assert bucket.try_acquire(3.0)

    assert not bucket.try_acquire(3.0)
    assert bucket.try_acquire(2.0)


def test_seconds_until_available_is_the_missing_tokens_over_the_rate(
    bucket: TokenBucket, clock: ManualClock
) -> None:
    _drain(bucket)
    clock.now += 0.125

    assert bucket.seconds_until_available() == 0.125
    assert bucket.seconds_until_available(3.0) == 0.625


def test_a_request_above_the_capacity_is_refused_as_never_possible(
    bucket: TokenBucket,
) -> None:
    with pytest.raises(ValueError, match="can never be granted"):
        bucket.try_acquire(CAPACITY + 1)


def test_a_clock_that_steps_back_takes_no_tokens_away(
    bucket: TokenBucket, clock: ManualClock
) -> None:
    assert bucket.try_acquire(2.0)

    clock.now -= 100.0

    assert _drain(bucket) == 3


@pytest.mark.parametrize(
    ("rate", "capacity", "named"),
    [
        (0.0, 1.0, "rate_per_second"),
        (float("nan"), 1.0, "rate_per_second"),
        (1.0, 0.5, "capacity"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    rate: float, capacity: float, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        TokenBucket(rate, capacity)


def test_acquire_takes_an_available_token_at_once() -> None:
    bucket = TokenBucket(0.001, 1.0)

    assert bucket.acquire(threading.Event(), timeout_seconds=0.0)


def test_acquire_waits_for_the_refill() -> None:
    bucket = TokenBucket(50.0, 1.0)
    assert bucket.try_acquire()

    granted = bucket.acquire(threading.Event(), THREAD_TIMEOUT_SECONDS)

    assert granted


def test_acquire_gives_up_when_the_timeout_passes() -> None:
    bucket = TokenBucket(0.001, 1.0)
    assert bucket.try_acquire()

    granted = bucket.acquire(threading.Event(), timeout_seconds=0.05)

    assert not granted


def test_acquire_gives_up_when_stop_is_set_from_another_thread() -> None:
    bucket = TokenBucket(0.001, 1.0)
    assert bucket.try_acquire()
    stop = threading.Event()
    results: list[bool] = []
    waiter = threading.Thread(
        target=lambda: results.append(bucket.acquire(stop))
    )

    waiter.start()
    stop.set()
    waiter.join(THREAD_TIMEOUT_SECONDS)

    assert not waiter.is_alive()
    assert results == [False]


def test_acquire_with_stop_already_set_does_not_wait() -> None:
    bucket = TokenBucket(0.001, 1.0)
    assert bucket.try_acquire()
    stop = threading.Event()
    stop.set()

    assert not bucket.acquire(stop)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000.0),
    capacity=st.floats(1.0, 100.0),
    steps=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.01, 1.0)),
        max_size=100,
    ),
)
def test_no_window_of_time_gets_more_than_capacity_plus_rate_times_length(
    rate: float, capacity: float, steps: list[tuple[float, float]]
) -> None:
    """For every window from step i to step j, the grants in it are at most
    capacity + rate * (t_j - t_i); windows that begin after an idle spell
    are the ones a bucket that overfills would break."""
    clock = ManualClock()
    bucket = TokenBucket(rate, capacity, clock)
    granted = 0.0
    # The smallest (granted before step i) - rate * t_i over past steps:
    # the window that starts there is the tightest one for the bound.
    tightest_start = granted - rate * clock.now

    for advance_seconds, share_of_capacity in steps:
        clock.now += advance_seconds
        tightest_start = min(tightest_start, granted - rate * clock.now)
        tokens = share_of_capacity * capacity
        if bucket.try_acquire(tokens):
            granted += tokens

        window_excess = granted - rate * clock.now - tightest_start
        assert window_excess <= capacity + ROUNDING_SLACK


def test_threads_sharing_a_bucket_stay_within_the_bound() -> None:
    rate, capacity = 200.0, 10.0
    thread_count, attempts_per_thread = 4, 20_000
    run_for_seconds = 0.3
    grants = [0] * thread_count
    start = threading.Barrier(thread_count + 1)

    began = time.monotonic()
    bucket = TokenBucket(rate, capacity)

    def take(index: int) -> None:
        start.wait(THREAD_TIMEOUT_SECONDS)
        until = time.monotonic() + run_for_seconds
        for _ in range(attempts_per_thread):
            if time.monotonic() >= until:
                return
            if bucket.try_acquire():
                grants[index] += 1

    threads = [
        threading.Thread(target=take, args=(index,))
        for index in range(thread_count)
    ]
    for thread in threads:
        thread.start()
    start.wait(THREAD_TIMEOUT_SECONDS)
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
    elapsed = time.monotonic() - began

    assert sum(grants) >= capacity
    assert sum(grants) <= capacity + rate * elapsed + 1
