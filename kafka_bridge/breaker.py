"""A circuit breaker per endpoint: stop sending to an API that keeps failing.

Retrying every record against an endpoint that is down costs each worker
its whole backoff, record after record, and adds load to a service that is
trying to recover. After a run of consecutive failures the breaker opens:
callers are refused at once and can fail over or wait. Once a cool-down has
passed, a single request is let through as a probe; its outcome closes the
breaker or opens it again for another cool-down.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable


class BreakerState(enum.Enum):
    """Where a breaker stands; the values are the names used in metrics."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


BreakerListener = Callable[[str, BreakerState], None]


class CircuitBreaker:
    """Thread-safe breaker for one named endpoint.

    Callers ask `allow()` before each request and report its outcome with
    `record_success()` or `record_failure()`. Only consecutive failures
    count: a success in between means the endpoint still works.

    In the half-open state exactly one caller gets True from `allow()`: the
    probe. The others are refused until it reports. A probe whose caller
    died never reports; so that it cannot keep the breaker half-open
    forever, a probe that has not reported within `cool_down_seconds` is
    given up and the next caller becomes the probe. The breaker cannot tell
    the probe's report from that of a request sent before it opened: any
    failure reported while half-open opens it again, any success closes it.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int,
        cool_down_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(
                f"failure_threshold of breaker {name!r} must be at least 1; "
                f"got {failure_threshold}"
            )
        if not cool_down_seconds > 0:
            raise ValueError(
                f"cool_down_seconds of breaker {name!r} must be above 0; "
                f"got {cool_down_seconds}"
            )

        self.name = name
        self._threshold = failure_threshold
        self._cool_down_seconds = cool_down_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._listeners: list[BreakerListener] = []
        # Transitions wait here, in the order they happened, until they are
        # handed to the listeners outside the state lock.
        self._unreported: deque[BreakerState] = deque()
        self._reporting = threading.RLock()

    @property
    def state(self) -> BreakerState:
        """The current state; moves OPEN to HALF_OPEN once cooled down."""
        with self._lock:
            self._end_cool_down()
            state = self._state
        self._report()
        return state

    def allow(self) -> bool:
        """May the caller send a request now?"""
        with self._lock:
            self._end_cool_down()
            allowed = self._admit()
        self._report()
        return allowed

    def record_success(self) -> None:
        """The endpoint answered as hoped: close and forget past failures."""
        with self._lock:
            self._failures = 0
            self._probe_started_at = None
            self._move_to(BreakerState.CLOSED)
        self._report()

    def record_failure(self) -> None:
        """The endpoint failed a request; open if that was one too many."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._open()
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self._threshold:
                    self._open()
        self._report()

    def on_change(self, listener: BreakerListener) -> None:
        """Call `listener(name, new_state)` after each transition.

        Listeners run outside the breaker's lock, so they may read the
        breaker, and see the transitions in the order they happened. A
        listener should not raise: its exception reaches the caller whose
        request caused the transition.
        """
        with self._lock:
            self._listeners.append(listener)

    def _admit(self) -> bool:
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False

        now = self._clock()
        if self._probe_is_out(now):
            return False
        self._probe_started_at = now
        return True

    def _probe_is_out(self, now: float) -> bool:
        """A probe was let through and may still report."""
        started = self._probe_started_at
        return started is not None and now - started < self._cool_down_seconds

    def _end_cool_down(self) -> None:
        if self._state is not BreakerState.OPEN:
            return
        if self._clock() - self._opened_at >= self._cool_down_seconds:
            self._probe_started_at = None
            self._move_to(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_started_at = None
        self._move_to(BreakerState.OPEN)

    def _move_to(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            self._unreported.append(state)

    def _report(self) -> None:
        # Most calls change nothing; they need not queue behind a listener.
        if not self._unreported:
            return

        # One thread at a time hands out transitions, oldest first, so
        # listeners see them in order even when threads race. The lock is
        # re-entrant for a listener that itself causes a transition.
        with self._reporting:
            while True:
                with self._lock:
                    if not self._unreported:
                        return
                    state = self._unreported.popleft()
                    listeners = list(self._listeners)
                for listener in listeners:
                    listener(self.name, state)
