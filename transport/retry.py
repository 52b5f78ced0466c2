"""How long to wait before trying a failed tool call again."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, up to `max_tries` attempts in all.

    Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of
    agents that failed together, so that they do not collide again on the same rows.
    """

    max_tries: int = 5
    base_s: float = 0.005
    cap_s: float = 0.5

    def backoff(self, failed_attempt: int, rng: random.Random) -> float:
        """Seconds to sleep after attempt number `failed_attempt` (1-based) failed."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (failed_attempt - 1))
        return rng.uniform(0.0, ceiling)
