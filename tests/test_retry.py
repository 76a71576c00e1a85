"""The retry policy classifies failures, spaces attempts and knows when to
stop; the endpoint throttle shares a server's request to slow down."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_bridge.retry import (
    EndpointThrottle,
    RetryPolicy,
    parse_retry_after,
)

# Wed, 21 Oct 2015 07:28:00 GMT, the example date of RFC 9110.
NOW_WALL = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()

POLICY = RetryPolicy(
    initial_backoff_seconds=0.5,
    max_backoff_seconds=8.0,
    multiplier=2.0,
    max_attempts=4,
    max_elapsed_seconds=60.0,
    max_retry_after_seconds=30.0,
)


class ManualClock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _http_date(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(NOW_WALL + seconds_from_now, tz=UTC)
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_statuses_that_mean_not_now_are_retryable(status: int) -> None:
    verdict = POLICY.classify(status)

    assert verdict.retryable
    assert verdict.reason == f"HTTP {status} is retryable"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_refused_request_is_not_retryable(status: int) -> None:
    verdict = POLICY.classify(status)

    assert not verdict.retryable
    assert "the request itself is refused" in verdict.reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_retryable_since_it_is_not_followed(
    status: int,
) -> None:
    verdict = POLICY.classify(status)

    assert not verdict.retryable
    assert "redirects are not followed" in verdict.reason


def test_a_server_error_outside_the_set_is_not_retryable() -> None:
    verdict = POLICY.classify(501)

    assert not verdict.retryable
    assert "HTTP 501" in verdict.reason


def test_no_answer_at_all_is_retryable() -> None:
    verdict = POLICY.classify(None)

    assert verdict.retryable
    assert "connection error" in verdict.reason


def test_a_status_added_to_the_set_becomes_retryable() -> None:
    policy = RetryPolicy(retryable_statuses=frozenset({409}))

    assert policy.classify(409).retryable
    assert not policy.classify(503).retryable


@pytest.mark.parametrize("status", [200, 201, 204])
def test_asking_to_classify_a_success_is_an_error(status: int) -> None:
    with pytest.raises(ValueError, match="success"):
        POLICY.classify(status)


def test_the_ceiling_doubles_from_the_initial_backoff_up_to_the_cap() -> None:
    ceilings = [POLICY.backoff_ceiling(attempt) for attempt in range(1, 8)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_record_retried_for_days_does_not_overflow_the_ceiling() -> None:
    assert POLICY.backoff_ceiling(10**9) == 8.0


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        POLICY.backoff_ceiling(0)


def test_without_retry_after_the_delay_is_jittered_over_the_ceiling() -> None:
    rng = random.Random(3)

    delays = [POLICY.next_delay(3, rng=rng) for _ in range(500)]

    assert all(0.0 <= delay <= 2.0 for delay in delays)
    assert min(delays) < 0.2 and max(delays) > 1.8


def test_retry_after_in_seconds_is_a_lower_bound_for_the_delay() -> None:
    rng = random.Random(5)

    delays = [POLICY.next_delay(1, "12", rng=rng) for _ in range(50)]

    assert all(delay >= 12.0 for delay in delays)


def test_retry_after_as_an_http_date_is_a_lower_bound_for_the_delay() -> None:
    header = _http_date(20)

    delay = POLICY.next_delay(1, header, now_wall=NOW_WALL)

    assert delay >= 20.0


def test_a_retry_after_longer_than_the_cap_is_cut_to_the_cap() -> None:
    delays = [
        POLICY.next_delay(1, "86400", now_wall=NOW_WALL),
        POLICY.next_delay(1, _http_date(86400), now_wall=NOW_WALL),
    ]

    assert delays == [30.0, 30.0]


@pytest.mark.parametrize(
    "header", ["soon", "-5", "nan", "inf", "1e3", "", "9" * 200]
)
def test_an_unreadable_retry_after_falls_back_to_the_jittered_delay(
    header: str,
) -> None:
    delay = POLICY.next_delay(2, header, rng=random.Random(11))

    assert delay == POLICY.next_delay(2, rng=random.Random(11))


def test_a_retry_after_date_in_the_past_asks_for_no_wait() -> None:
    waits = [
        parse_retry_after(_http_date(-3600), NOW_WALL),
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW_WALL),
    ]

    assert waits == [0.0, 0.0]


def test_a_past_retry_after_date_leaves_only_the_jittered_delay() -> None:
    delay = POLICY.next_delay(
        1, _http_date(-60), now_wall=NOW_WALL, rng=random.Random(2)
    )

    assert 0.0 <= delay <= POLICY.backoff_ceiling(1)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5)],
)
def test_retry_after_delta_seconds_are_read_as_seconds(
    header: str, seconds: float
) -> None:
    assert parse_retry_after(header, NOW_WALL) == seconds


@pytest.mark.parametrize(
    "header",
    [
        "-1",
        "+5",
        "NaN",
        "1e9",
        "0x10",
        "\u0661\u0662",
        "Wed, 21 Oct 2015 25:61:00 GMT",
        "Wed, 99 Foo 2015 07:28:00 GMT",
        "x" * 1000,
    ],
)
def test_unreadable_retry_after_values_give_none(header: str) -> None:
    assert parse_retry_after(header, NOW_WALL) is None


def test_a_date_without_a_zone_offset_is_taken_as_gmt() -> None:
    wait = parse_retry_after("Wed, 21 Oct 2015 07:29:00 -0000", NOW_WALL)

    assert wait == 60.0


def test_a_record_is_exhausted_after_max_attempts() -> None:
    exhausted = [POLICY.exhausted(attempts, 0.0) for attempts in (3, 4, 5)]

    assert exhausted == [False, True, True]


def test_a_record_is_exhausted_after_max_elapsed_seconds() -> None:
    exhausted = [POLICY.exhausted(1, elapsed) for elapsed in (59.9, 60.0)]

    assert exhausted == [False, True]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_backoff_seconds", 0.0),
        ("max_backoff_seconds", 0.1),
        ("multiplier", 0.5),
        ("max_attempts", 0),
        ("max_elapsed_seconds", float("nan")),
        ("max_retry_after_seconds", -1.0),
    ],
)
def test_a_policy_with_a_bad_value_names_the_field_and_the_value(
    field: str, value: float
) -> None:
    overrides: dict[str, Any] = {field: value}

    with pytest.raises(ValueError) as caught:
        RetryPolicy(**overrides)

    assert f"RetryPolicy.{field} must be" in str(caught.value)
    assert repr(value) in str(caught.value)


def test_a_throttle_that_was_never_held_off_lets_callers_through() -> None:
    throttle = EndpointThrottle(ManualClock())

    assert throttle.wait_seconds() == 0.0


def test_a_hold_off_counts_down_with_the_clock() -> None:
    clock = ManualClock()
    throttle = EndpointThrottle(clock)
    throttle.hold_off(10.0)

    waits = []
    for _ in range(3):
        waits.append(throttle.wait_seconds())
        clock.now += 4.0

    assert waits == [10.0, 6.0, 2.0]
    assert throttle.wait_seconds() == 0.0


def test_a_shorter_hold_off_does_not_cut_a_longer_one_short() -> None:
    clock = ManualClock()
    throttle = EndpointThrottle(clock)

    throttle.hold_off(30.0)
    clock.now += 5.0
    throttle.hold_off(10.0)

    assert throttle.wait_seconds() == 25.0


def test_a_longer_hold_off_extends_a_shorter_one() -> None:
    clock = ManualClock()
    throttle = EndpointThrottle(clock)

    throttle.hold_off(5.0)
    throttle.hold_off(20.0)

    assert throttle.wait_seconds() == 20.0


def test_a_negative_hold_off_is_refused() -> None:
    throttle = EndpointThrottle(ManualClock())

    with pytest.raises(ValueError, match="0 or more"):
        throttle.hold_off(-1.0)


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 10_000),
    header=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.integers(-(10**12), 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.integers(-(10**10), 10**10).map(_http_date),
    ),
    seed=st.integers(0, 2**32),
)
def test_a_delay_is_never_negative_nor_beyond_the_caps(
    attempt: int, header: str | None, seed: int
) -> None:
    delay = POLICY.next_delay(
        attempt, header, now_wall=NOW_WALL, rng=random.Random(seed)
    )

    limit = max(POLICY.max_backoff_seconds, POLICY.max_retry_after_seconds)
    assert 0.0 <= delay <= limit
