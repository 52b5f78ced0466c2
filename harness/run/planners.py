"""What an agent asks for its next turn, and how long to think before it: the turn model's draws
(--calls-per-turn, --same-key, --think-time: harness.run.turns.plan_turn), or a trace's turns
replayed (--trace: harness.config.trace).

A trace's agents are dealt to the Locust agents: the process's agents in the order they start,
each process its own block of the trace's agents (the agents it was told to run, from its index
on); an agent past the trace's agents takes them again from the first. An agent that has played
its trace agent's last turn starts again from its first, until the test stops: a trace is a
sample of an agent's work, replayed as load for as long as the run lasts. A call's seed is drawn
from the agent's seeded source, as the model's are, and its arguments left out of the trace are
drawn from it: the same seed gives each agent the same calls, in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from db.tool import Tool
from harness.config.settings import Settings
from harness.config.trace import TraceTurn
from harness.run.memory import Memory
from harness.run.turns import PlannedCall, Turn, plan_turn

__all__ = ["ModelPlanner", "Planner", "TracePlanner"]


class Planner(Protocol):
    # The agent's memory of its reads, for its workflows' writes (harness.run.memory); None
    # without workflows, or when the turns are a trace's, whose calls carry their arguments.
    memory: Memory | None

    def thinks_first(self) -> bool:
        """Whether the agent thinks before its first turn (Locust waits only after a task)."""

    def think(self) -> float:
        """The seconds to think before the next turn (the agent's wait_time)."""

    def next_turn(self) -> Turn:
        """The agent's next turn, its calls drawn."""


class ModelPlanner:
    """The turn model: calls drawn by weight, a think time drawn at each wait, none before the first turn."""

    def __init__(self, settings: Settings, rng: random.Random, pick: Callable[[random.Random], Tool],
                 think: Callable[[], float], memory: Memory | None) -> None:
        self._settings, self._rng, self._pick, self._think = settings, rng, pick, think
        self.memory = memory
        self._turns = 0

    def thinks_first(self) -> bool:
        return False

    def think(self) -> float:
        return self._think()

    def next_turn(self) -> Turn:
        self._turns += 1
        return plan_turn(self._turns, self._rng, self._pick, self._settings.calls_per_turn, self._settings.same_key,
                         self.memory)


class TracePlanner:
    """One trace agent's turns, in order and again, each after its think time."""

    memory = None

    def __init__(self, turns: tuple[TraceTurn, ...], rng: random.Random) -> None:
        self._trace_turns, self._rng = turns, rng
        self._turns = 0  # the agent's, over every pass through its trace agent's turns
        self._first = turns[0].think_s > 0

    def _upcoming(self) -> TraceTurn:
        return self._trace_turns[self._turns % len(self._trace_turns)]

    def thinks_first(self) -> bool:
        first, self._first = self._first, False
        return first

    def think(self) -> float:
        return self._upcoming().think_s

    def next_turn(self) -> Turn:
        turn = self._upcoming()
        self._turns += 1
        calls = []
        for call in turn.calls:
            seed = self._rng.getrandbits(64)
            # Those the trace leaves out drawn from the seed; none given: the adapter draws them
            # all, as for any call (a tool given arguments has an arguments step: the trace's check).
            arguments = {**(call.tool.draw_arguments(seed) or {}), **call.arguments} if call.arguments else None
            calls.append(PlannedCall(call.tool, seed, arguments))
        return Turn(self._turns, tuple(calls), same_key_pairs=0)
