"""The circuit breaker opens on consecutive failures, refuses while open,
and lets exactly one probe through once it has cooled down."""

from __future__ import annotations

import itertools
import random
import threading

import pytest

from kafka_bridge.breaker import BreakerState, CircuitBreaker
from tests.manual_clock import ManualClock

THRESHOLD = 3
COOL_DOWN_SECONDS = 10.0
THREAD_TIMEOUT_SECONDS = 10.0

POSSIBLE_TRANSITIONS = {
    (BreakerState.CLOSED, BreakerState.OPEN),
    (BreakerState.OPEN, BreakerState.HALF_OPEN),
    # A success reported by a request sent before the breaker opened.
    (BreakerState.OPEN, BreakerState.CLOSED),
    (BreakerState.HALF_OPEN, BreakerState.OPEN),
    (BreakerState.HALF_OPEN, BreakerState.CLOSED),
}


@pytest.fixture
def breaker(clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker("primary", THRESHOLD, COOL_DOWN_SECONDS, clock)


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def _opened(breaker: CircuitBreaker) -> CircuitBreaker:
    _fail(breaker, THRESHOLD)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_a_new_breaker_is_closed_and_allows_requests(
    breaker: CircuitBreaker,
) -> None:
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_it_opens_after_threshold_consecutive_failures(
    breaker: CircuitBreaker,
) -> None:
    _fail(breaker, THRESHOLD - 1)
    before = breaker.state

    breaker.record_failure()

    assert before is BreakerState.CLOSED
    assert breaker.state is BreakerState.OPEN


def test_failures_separated_by_a_success_do_not_open_it(
    breaker: CircuitBreaker,
) -> None:
    for _ in range(5):
        _fail(breaker, THRESHOLD - 1)
        breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_an_open_breaker_refuses_requests(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS - 0.5

    refusals = [breaker.allow() for _ in range(3)]

    assert refusals == [False, False, False]
    assert breaker.state is BreakerState.OPEN


def test_reading_the_state_after_the_cool_down_shows_half_open(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)

    clock.now += COOL_DOWN_SECONDS

    assert breaker.state is BreakerState.HALF_OPEN


def test_after_the_cool_down_one_probe_is_allowed_and_no_second(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS

    answers = [breaker.allow() for _ in range(4)]

    assert answers == [True, False, False, False]


def test_only_one_of_many_threads_asking_at_once_gets_the_probe(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    thread_count = 16
    start = threading.Barrier(thread_count)
    answers: list[bool] = []
    answers_lock = threading.Lock()

    def ask() -> None:
        start.wait(THREAD_TIMEOUT_SECONDS)
        allowed = breaker.allow()
        with answers_lock:
            answers.append(allowed)

    threads = [threading.Thread(target=ask) for _ in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)

    assert len(answers) == thread_count
    assert answers.count(True) == 1


def test_a_successful_probe_closes_the_breaker(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    assert breaker.allow()

    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert [breaker.allow() for _ in range(3)] == [True, True, True]


def test_a_closed_breaker_after_a_probe_counts_failures_afresh(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    assert breaker.allow()
    breaker.record_success()

    _fail(breaker, THRESHOLD - 1)

    assert breaker.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_with_a_fresh_cool_down(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    assert breaker.allow()
    clock.now += 2.0

    breaker.record_failure()
    clock.now += COOL_DOWN_SECONDS - 0.5
    still_open = breaker.state
    refused = breaker.allow()
    clock.now += 0.5

    assert still_open is BreakerState.OPEN
    assert not refused
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_the_cool_down(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    assert breaker.allow()

    clock.now += COOL_DOWN_SECONDS - 0.5
    while_probe_may_report = breaker.allow()
    clock.now += 0.5
    after_the_probe_is_given_up = [breaker.allow() for _ in range(2)]

    assert not while_probe_may_report
    assert after_the_probe_is_given_up == [True, False]
    assert breaker.state is BreakerState.HALF_OPEN


def test_the_listener_sees_each_transition_in_order(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    seen: list[tuple[str, BreakerState]] = []
    breaker.on_change(lambda name, state: seen.append((name, state)))

    _opened(breaker)
    clock.now += COOL_DOWN_SECONDS
    breaker.allow()
    breaker.record_failure()
    clock.now += COOL_DOWN_SECONDS
    breaker.allow()
    breaker.record_success()
    breaker.record_success()

    assert seen == [
        ("primary", BreakerState.OPEN),
        ("primary", BreakerState.HALF_OPEN),
        ("primary", BreakerState.OPEN),
        ("primary", BreakerState.HALF_OPEN),
        ("primary", BreakerState.CLOSED),
    ]


def test_a_listener_runs_outside_the_lock_and_may_read_the_breaker(
    breaker: CircuitBreaker,
) -> None:
    states_read: list[BreakerState] = []
    breaker.on_change(lambda _name, _state: states_read.append(breaker.state))

    _opened(breaker)

    assert states_read == [BreakerState.OPEN]


def test_racing_threads_report_a_chain_of_transitions_that_could_happen(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker("primary", 2, 2.0, clock)
    reported: list[BreakerState] = []
    breaker.on_change(lambda _name, state: reported.append(state))
    thread_count, steps_per_thread = 4, 300
    start = threading.Barrier(thread_count)
    clock_lock = threading.Lock()

    def drive(seed: int) -> None:
        rng = random.Random(seed)
        start.wait(THREAD_TIMEOUT_SECONDS)
        for _ in range(steps_per_thread):
            step = rng.randrange(4)
            if step == 0:
                breaker.allow()
            elif step == 1:
                breaker.record_failure()
            elif step == 2:
                breaker.record_success()
            else:
                with clock_lock:
                    clock.now += 1.0

    threads = [
        threading.Thread(target=drive, args=(seed,))
        for seed in range(thread_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)

    chain = [BreakerState.CLOSED, *reported]
    steps = set(itertools.pairwise(chain))
    assert len(reported) > 10
    assert steps <= POSSIBLE_TRANSITIONS
    assert chain[-1] is breaker.state


@pytest.mark.parametrize(
    ("threshold", "cool_down_seconds", "named"),
    [(0, 1.0, "failure_threshold"), (1, 0.0, "cool_down_seconds")],
)
def test_bad_arguments_are_refused_by_name(
    threshold: int, cool_down_seconds: float, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        CircuitBreaker("primary", threshold, cool_down_seconds)
