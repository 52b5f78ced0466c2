"""The turn model's options: how many tool calls an agent's turn makes (--calls-per-turn, drawn
by weight), and how often a later call of a turn takes a key an earlier call of it took
(--same-key). What a turn is and how it runs: harness.run.turns."""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from dataclasses import dataclass

from harness.config.option import BadOption

__all__ = ["MOST_CALLS", "CallsPerTurn", "calls_per_turn", "same_key"]

# More calls than this in one turn is no agent's batch, and the pool and threads are sized by it.
MOST_CALLS = 64


@dataclass(frozen=True)
class CallsPerTurn:
    """Calls per turn with their weights, e.g. ((1, 60), (2, 25), (4, 15))."""

    weights: tuple[tuple[int, int], ...]

    @property
    def most(self) -> int:
        """The most calls a turn can run at once."""
        return max(calls for calls, _ in self.weights)

    def draw(self, rng: random.Random) -> int:
        """The calls of the next turn. One choice draws nothing from `rng`, so a run of one call
        per turn makes the draws, so the calls, of the runs before turns existed."""
        if len(self.weights) == 1:
            return self.weights[0][0]
        cumulative = list(itertools.accumulate(weight for _, weight in self.weights))
        return self.weights[bisect(cumulative, rng.random() * cumulative[-1], 0, len(cumulative) - 1)][0]


def calls_per_turn(text: str) -> CallsPerTurn:
    """`N` or `N:WEIGHT,N:WEIGHT,...` (a missing weight is 1); raises BadOption."""
    def refuse(why: str) -> BadOption:
        return BadOption(f"--calls-per-turn {text!r}: {why} (e.g. 1:60,2:25,4:15: calls per turn, weight)")

    weights: dict[int, int] = {}
    for part in text.split(","):
        calls_text, _, weight_text = part.strip().partition(":")
        try:
            calls, weight = int(calls_text), int(weight_text) if weight_text else 1
        except ValueError:
            raise refuse(f"{part.strip()!r} is not CALLS or CALLS:WEIGHT in whole numbers") from None
        if not 1 <= calls <= MOST_CALLS:
            raise refuse(f"{calls} calls: give 1 to {MOST_CALLS}")
        if weight < 0:
            raise refuse(f"weight {weight}: give 0 or more")
        if calls in weights:
            raise refuse(f"{calls} calls given twice")
        weights[calls] = weight
    if not any(weights.values()):
        raise refuse("no weight above 0")
    return CallsPerTurn(tuple((calls, weight) for calls, weight in weights.items() if weight > 0))


def same_key(value: float) -> float:
    """--same-key's chance; raises BadOption when it is not one."""
    if not 0.0 <= value <= 1.0:
        raise BadOption(f"--same-key {value:g}: a chance, from 0 to 1")
    return value
