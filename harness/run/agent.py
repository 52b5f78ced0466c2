"""The agent: a Locust user that takes turns, each a batch of tool calls run at once
(harness.run.turns; one call per turn by default), and thinks between two (its wait_time); its
planner (harness.run.planners) draws them from the turn model, or replays a trace's."""

from __future__ import annotations

from locust import User, task
from locust.exception import RescheduleTask, StopUser

from harness.run.load import load_of
from harness.run.turns import run_turn

__all__ = ["Agent"]


class Agent(User):
    """An AI agent of the platform under test. Each one has its own id (written to the ledger
    with every operation) and picks its tools by weight from the selected scenarios, with a
    random source seeded from the run's seed and its id: the same seed, the same turns."""

    def on_start(self) -> None:
        self._load = load_of(self.environment)
        self.agent_id, self._rng = self._load.next_agent()
        self._planner = self._load.planner(self.agent_id, self._rng)
        self._load.open_agent(self.agent_id)

    def on_stop(self) -> None:
        self._load.close_agent(self.agent_id)

    def wait_time(self) -> float:
        # Locust sleeps it between two tasks and ends that sleep at once when the agent is stopped.
        return self._planner.think()

    @task
    def take_turn(self) -> None:
        adapter = self._load.adapter
        if adapter is None:
            raise StopUser()  # the load could not start (its pool did not open): the run is ending
        if self._planner.thinks_first():
            raise RescheduleTask()  # Locust waits (wait_time: the first turn's think), then asks again
        self._load.record_turn(run_turn(adapter, self.agent_id, self._planner.next_turn(), self._planner.memory))
