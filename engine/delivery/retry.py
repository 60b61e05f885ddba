"""When to try a failed delivery again, and when to stop trying.

A pure function of the attempt number and a random source, so tests pin the jitter and
drive time with `task.Clock` instead of sleeping.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and/or age."""

    initial_seconds: float = 1.0
    multiplier: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.2
    max_attempts: int | None = 10
    max_age_seconds: float | None = None

    def delay(self, attempt: int, rng: _random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** (attempt - 1))
        if self.jitter <= 0:
            return base
        spread = base * self.jitter
        return max(0.0, base + (rng or _random).uniform(-spread, spread))

    def exhausted(self, attempts: int, age_seconds: float) -> bool:
        """True when no further attempt is allowed (the message goes to ERROR)."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return self.max_age_seconds is not None and age_seconds >= self.max_age_seconds
