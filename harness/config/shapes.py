"""Load shapes for the ramps users need (--shape): agents in stages, each held --shape-hold
seconds. `steps` climbs (10, 20, 30, 40, 50 agents by default) to show at which number of
agents the SLAs stop holding; `spike` jumps up and back (10, 60, 10)."""

from __future__ import annotations

from collections.abc import Callable

from locust import LoadTestShape

__all__ = ["SHAPES", "AgentStages"]

SHAPES = {"steps": (10, 20, 30, 40, 50), "spike": (10, 60, 10)}


class AgentStages(LoadTestShape):
    """Hold each stage's number of agents for `hold_s`; then stop. `on_stage(index, agents)` is
    called when a stage begins, so that metrics can be told apart by stage."""

    def __init__(self, stages: tuple[int, ...], hold_s: float, spawn_rate: float,
                 on_stage: Callable[[int, int], None]) -> None:
        super().__init__()
        self.stages = stages
        self.hold_s = hold_s
        self.spawn_rate = spawn_rate
        self._on_stage = on_stage
        self._current: int | None = None

    def reset_time(self) -> None:
        super().reset_time()
        self._current = None

    def tick(self) -> tuple[int, float] | None:
        index = int(self.get_run_time() // self.hold_s)
        if index >= len(self.stages):
            return None
        if index != self._current:
            self._current = index
            self._on_stage(index, self.stages[index])
        return self.stages[index], self.spawn_rate
