"""Capped, jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Full-jitter exponential backoff: thousands of agents never reconnect in lock-step."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    _attempt: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The delay before the next attempt; grows until reset()."""
        ceiling = min(self.maximum, self.initial * (self.multiplier**self._attempt))
        self._attempt = min(self._attempt + 1, 64)
        return self._random.uniform(0, ceiling)

    def reset(self) -> None:
        """Start again from the initial delay after a healthy connection."""
        self._attempt = 0
