"""A clock for tests of time-driven code that must not sleep."""

from __future__ import annotations


class ManualClock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
