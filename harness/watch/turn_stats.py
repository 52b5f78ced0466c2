"""The agents' turns as one process counted them, in a form that merges exactly across workers
(what a turn is, and what a collision: harness.run.turns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.report_shape import Turns
from harness.watch.histogram import Histogram

__all__ = ["TurnFigures", "TurnStats"]


@dataclass(frozen=True)
class TurnFigures:
    """What one finished turn did."""

    calls: int
    latency_s: float  # from the batch's start to its last call's end
    conflicted: bool  # a call of it met a failed attempt of a conflict kind
    same_key_pairs: int  # drawn by --same-key
    overlapping_same_key_pairs: int  # pairs of its calls that shared a key and overlapped in time
    collisions: int  # of those, the pairs at least one of whose calls met a conflict


_COUNTS = ("turns", "with_conflicts", "same_key_pairs", "overlapping_same_key_pairs", "collisions")


@dataclass
class TurnStats:
    turns: int = 0  # finished: a turn its agent was stopped in is not counted (its calls are)
    with_conflicts: int = 0
    same_key_pairs: int = 0
    overlapping_same_key_pairs: int = 0
    collisions: int = 0
    calls_per_turn: dict[int, int] = field(default_factory=dict)  # calls -> turns
    latency: Histogram = field(default_factory=Histogram)

    def record(self, turn: TurnFigures) -> None:
        self.turns += 1
        self.with_conflicts += turn.conflicted
        self.same_key_pairs += turn.same_key_pairs
        self.overlapping_same_key_pairs += turn.overlapping_same_key_pairs
        self.collisions += turn.collisions
        self.calls_per_turn[turn.calls] = self.calls_per_turn.get(turn.calls, 0) + 1
        self.latency.record(turn.latency_s)

    def merge(self, other: TurnStats) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for calls, turns in other.calls_per_turn.items():
            self.calls_per_turn[calls] = self.calls_per_turn.get(calls, 0) + turns
        self.latency.merge(other.latency)

    def section(self) -> Turns:
        """The report's `turns`."""
        return {
            "turns": self.turns,
            "calls": sum(calls * turns for calls, turns in self.calls_per_turn.items()),
            "calls_per_turn": {str(calls): self.calls_per_turn[calls] for calls in sorted(self.calls_per_turn)},
            "latency_ms": self.latency.summary_ms(),
            "with_conflicts": self.with_conflicts,
            "same_key_pairs": self.same_key_pairs,
            "overlapping_same_key_pairs": self.overlapping_same_key_pairs,
            "collisions": self.collisions,
        }

    def to_dict(self) -> dict[str, Any]:
        # String keys: the form survives JSON as well as Locust's msgpack messages.
        return {**{name: getattr(self, name) for name in _COUNTS},
                "calls_per_turn": {str(calls): turns for calls, turns in self.calls_per_turn.items()},
                "latency": self.latency.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnStats:
        return cls(**{name: data[name] for name in _COUNTS},
                   calls_per_turn={int(calls): turns for calls, turns in data["calls_per_turn"].items()},
                   latency=Histogram.from_dict(data["latency"]))
