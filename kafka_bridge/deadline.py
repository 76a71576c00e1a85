"""A point in time that several waits share.

Shutdown promises to end within one budget, whatever the number of steps:
each step waits only for the time the budget has left.
"""

from __future__ import annotations

import time


class Deadline:
    """Time left until a moment fixed when the deadline is made."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self, reserve_seconds: float = 0.0) -> float:
        """Seconds left, less a reserve kept for later steps; never < 0."""
        return max(0.0, self._end - time.monotonic() - reserve_seconds)

    @property
    def expired(self) -> bool:
        """No time is left."""
        return self.remaining() == 0.0
