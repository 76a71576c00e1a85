"""When a failed delivery is retried, and after how long.

The policy is a value and its questions are pure functions: is this answer
worth another attempt, how long to wait before it, is the record out of
attempts or time. Computing a delay apart from waiting it out lets the
numbers be tested without a clock, and lets the caller wait on an event
that a shutdown can interrupt.

`EndpointThrottle` is the one stateful piece: a server that answers 429 or
503 with Retry-After asks every client to slow down, so the pause it asks
for is shared by all workers that deliver to that endpoint.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

DEFAULT_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# An HTTP-date is 29 characters; anything much longer is not a value this
# module is willing to parse.
_MAX_RETRY_AFTER_LENGTH = 64

# RFC 9110 allows only digits; a fraction is accepted because some servers
# send one, and the pattern keeps out signs, exponents, "nan" and "inf".
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

# Past this exponent the power exceeds any sensible cap; stopping there
# keeps a record retried for days from overflowing a float.
_MAX_EXPONENT = 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a failed attempt may be retried, and why, for logs."""

    retryable: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one record is retried.

    `max_attempts` counts attempts at one endpoint, so a failover to a
    second endpoint starts with a fresh count; `max_elapsed_seconds` bounds
    the whole effort for the record over all endpoints, so a record cannot
    hold its partition's commit back forever.
    """

    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 30.0
    multiplier: float = 2.0
    max_attempts: int = 5
    max_elapsed_seconds: float = 300.0
    retryable_statuses: frozenset[int] = DEFAULT_RETRYABLE_STATUSES
    max_retry_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        # Each comparison is False for NaN, so NaN is refused too.
        checks = (
            (
                "initial_backoff_seconds",
                self.initial_backoff_seconds > 0,
                "a number of seconds above 0",
            ),
            (
                "max_backoff_seconds",
                self.max_backoff_seconds >= self.initial_backoff_seconds,
                "at least initial_backoff_seconds",
            ),
            (
                "multiplier",
                self.multiplier >= 1,
                "at least 1, so that waits never shrink",
            ),
            ("max_attempts", self.max_attempts >= 1, "at least 1"),
            (
                "max_elapsed_seconds",
                self.max_elapsed_seconds > 0,
                "a number of seconds above 0",
            ),
            (
                "max_retry_after_seconds",
                self.max_retry_after_seconds >= 0,
                "a number of seconds, 0 or more",
            ),
        )
        for field, holds, rule in checks:
            if not holds:
                value = getattr(self, field)
                raise ValueError(
                    f"RetryPolicy.{field} must be {rule}; got {value!r}"
                )

    def classify(self, status: int | None) -> Verdict:
        """Say whether an attempt that got `status` may be tried again.

        None means no answer at all (connection refused, reset, timed out):
        the request may never have arrived, and each request carries an
        Idempotency-Key, so an API that honours it does not act on a
        repeat twice. A status in
        `retryable_statuses` is the server saying "not now". Any other
        answer is final: a 4xx refuses the request itself, and a 3xx would
        need a redirect, which the bridge does not follow.

        A 2xx is not a failure, and asking about one is a mistake in the
        caller: it raises ValueError rather than return a verdict that
        could be taken for "give up on this record".
        """
        if status is None:
            return Verdict(True, "connection error is retryable")
        if 200 <= status < 300:
            raise ValueError(
                f"HTTP {status} is a success, not a failure to classify; "
                "check the status before asking whether to retry"
            )
        if status in self.retryable_statuses:
            return Verdict(True, f"HTTP {status} is retryable")
        reason = f"HTTP {status} is not retryable: {_why_final(status)}"
        return Verdict(False, reason)

    def backoff_ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (from 1)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")

        exponent = min(attempt - 1, _MAX_EXPONENT)
        try:
            grown = self.initial_backoff_seconds * self.multiplier**exponent
        except OverflowError:
            return self.max_backoff_seconds
        return min(self.max_backoff_seconds, grown)

    def next_delay(
        self,
        attempt: int,
        retry_after: str | None = None,
        *,
        now_wall: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt number `attempt`.

        The wait is drawn uniformly from [0, ceiling]: full jitter spreads
        the retries of many workers over the whole interval, instead of
        sending them back to a recovering API in step.

        A server's Retry-After (the raw header value) is honoured as a
        lower bound, but only up to `max_retry_after_seconds`: a value of a
        day, by mistake or by design, must not park a worker for a day. A
        value that does not parse is ignored. `now_wall` (time.time()) is
        what an HTTP-date is measured against; it defaults to now.
        """
        jittered = (rng or _RANDOM).uniform(0.0, self.backoff_ceiling(attempt))
        if retry_after is None:
            return jittered

        wall = time.time() if now_wall is None else now_wall
        asked = parse_retry_after(retry_after, wall)
        if asked is None:
            return jittered
        return max(min(asked, self.max_retry_after_seconds), jittered)

    def exhausted(self, attempts: int, elapsed_seconds: float) -> bool:
        """True when no attempt is left: by count, or by time spent."""
        out_of_attempts = attempts >= self.max_attempts
        out_of_time = elapsed_seconds >= self.max_elapsed_seconds
        return out_of_attempts or out_of_time


def parse_retry_after(value: str, now_wall: float) -> float | None:
    """The wait a Retry-After value asks for, in seconds, or None.

    Both forms of the header are understood: delta-seconds ("120") and an
    HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT"), the latter measured
    against `now_wall`, a time.time() value. A date in the past asks for
    no wait (0.0). Anything else, including negative numbers, "nan" and
    overlong strings, is None: a header the bridge cannot read must not
    decide how long it waits.
    """
    text = value.strip()
    if not text or len(text) > _MAX_RETRY_AFTER_LENGTH:
        return None

    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None

    return _seconds_until_date(text, now_wall)


def _seconds_until_date(text: str, now_wall: float) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None

    # "-0000" yields a naive datetime; HTTP-dates are always in GMT.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp() - now_wall
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class EndpointThrottle:
    """A shared 'not before' moment for one endpoint.

    A 429 or 503 with Retry-After is the server asking the client, not one
    connection, to slow down. Every worker that delivers to the endpoint
    consults the same throttle, so one worker's answer holds them all back
    instead of each discovering the overload with a request of its own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._not_before = -math.inf

    def hold_off(self, seconds: float) -> None:
        """Let no caller proceed for `seconds` from now.

        A shorter hold never cuts a longer one short: two workers that
        got different Retry-After values leave the later moment in force.
        """
        if not seconds >= 0:
            raise ValueError(
                f"a hold-off is a number of seconds, 0 or more; got {seconds}"
            )

        with self._lock:
            until = self._clock() + seconds
            self._not_before = max(self._not_before, until)

    def wait_seconds(self) -> float:
        """How long a caller must still wait before its request; never < 0."""
        with self._lock:
            return max(0.0, self._not_before - self._clock())


def _why_final(status: int) -> str:
    if 300 <= status < 400:
        return "redirects are not followed"
    if 400 <= status < 500:
        return "the request itself is refused"
    return "not among the retryable statuses"


_RANDOM = random.Random()
