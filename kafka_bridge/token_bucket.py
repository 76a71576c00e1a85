"""A token bucket: a rate limit that allows short bursts.

When the API fails for many records at once, every worker turns to the
dead-letter producer at the same moment. The bucket lets a burst of up to
`capacity` records through, then holds the flow to `rate_per_second`, so a
failing API does not turn into a flood on the dead-letter topic and the
broker behind it. Over any interval of t seconds it grants at most
capacity + rate * t tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Thread-safe token bucket that starts full.

    Tokens are refilled lazily from the clock at each call, so the bucket
    needs no thread of its own.
    """

    def __init__(
        self,
        rate_per_second: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_second > 0:
            raise ValueError(
                "rate_per_second must be above 0, or no token would ever "
                f"come back; got {rate_per_second}"
            )
        if not capacity >= 1:
            raise ValueError(
                "capacity must be at least 1, or a single token would never "
                f"fit; got {capacity}"
            )

        self._rate_per_second = rate_per_second
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = capacity
        self._refilled_at = clock()

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take `tokens` if the bucket holds them; never waits."""
        self._check_request(tokens)

        with self._lock:
            self._refill()
            if self._tokens < tokens:
                return False
            self._tokens -= tokens
            return True

    def seconds_until_available(self, tokens: float = 1.0) -> float:
        """How long until `tokens` could be taken, if nobody else takes any."""
        self._check_request(tokens)

        with self._lock:
            self._refill()
            missing = tokens - self._tokens
        return max(0.0, missing / self._rate_per_second)

    def acquire(
        self, stop: threading.Event, timeout_seconds: float | None = None
    ) -> bool:
        """Take one token, waiting for it if need be.

        Returns True with the token taken, or False once `stop` is set or
        `timeout_seconds` has passed. A token already there is taken even
        when `stop` is set: only waiting is cut short. The wait is on
        `stop`, for as long as the refill needs, so a stop ends it at once.
        The timeout is measured on the bucket's clock.
        """
        deadline = (
            None
            if timeout_seconds is None
            else self._clock() + timeout_seconds
        )
        while not self.try_acquire():
            delay = self.seconds_until_available()
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                delay = min(delay, left)
            if stop.wait(delay):
                return False
        return True

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back must not take tokens away.
        if now <= self._refilled_at:
            return
        earned = (now - self._refilled_at) * self._rate_per_second
        self._tokens = min(self._capacity, self._tokens + earned)
        self._refilled_at = now

    def _check_request(self, tokens: float) -> None:
        if not 0 < tokens <= self._capacity:
            raise ValueError(
                f"a request for {tokens} tokens can never be granted: it must "
                f"be above 0 and at most the capacity, {self._capacity}"
            )
