"""How long to wait before the next delivery attempt.

The delay is computed apart from the waiting, so it can be tested as
numbers: capped exponential growth with full jitter, which spreads the
retries of many workers over the whole interval instead of letting them
hit a recovering API in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n waits U(0, min(cap, b·mⁿ⁻¹))."""

    initial_seconds: float
    max_seconds: float
    multiplier: float

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (from 1)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # Past the cap the power only grows; stop computing it there so a
        # record retried for days does not overflow a float.
        exponent = min(attempt - 1, 1024)
        try:
            grown = self.initial_seconds * self.multiplier**exponent
        except OverflowError:
            return self.max_seconds
        return min(self.max_seconds, grown)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A random wait in [0, ceiling(attempt)]."""
        uniform = (rng or _RANDOM).uniform
        return uniform(0.0, self.ceiling(attempt))


_RANDOM = random.Random()
