"""Backoff delays grow exponentially to a cap, with full jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_bridge.backoff import Backoff

BACKOFF = Backoff(initial_seconds=0.5, max_seconds=8.0, multiplier=2.0)


def test_the_ceiling_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    ceilings = [BACKOFF.ceiling(attempt) for attempt in range(1, 8)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_delay_lies_between_zero_and_the_ceiling() -> None:
    rng = random.Random(7)

    delays = [BACKOFF.delay(3, rng) for _ in range(500)]

    assert all(0.0 <= delay <= 2.0 for delay in delays)
    # Full jitter spreads the delays over the whole interval.
    assert min(delays) < 0.2 and max(delays) > 1.8


def test_a_record_retried_for_days_does_not_overflow() -> None:
    assert BACKOFF.ceiling(10**6) == 8.0


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        BACKOFF.ceiling(0)


@given(st.integers(1, 10_000), st.integers(0, 2**32))
def test_no_delay_ever_exceeds_the_cap(attempt: int, seed: int) -> None:
    delay = BACKOFF.delay(attempt, random.Random(seed))

    assert 0.0 <= delay <= BACKOFF.max_seconds
