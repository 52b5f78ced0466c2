"""The agent: a Locust user that invokes tools, one call after the other."""

from __future__ import annotations

from locust import User, task
from locust.exception import StopUser

from harness.run.load import load_of

__all__ = ["Agent"]


class Agent(User):
    """An AI agent of the platform under test. Each one has its own id (written to the ledger
    with every operation) and picks its next tool by weight from the selected scenarios, with a
    random source seeded from the run's seed and its id: the same seed, the same calls."""

    def on_start(self) -> None:
        self._load = load_of(self.environment)
        self.agent_id, self._rng = self._load.next_agent()
        self._think_time = self._load.think_times(self.agent_id)
        self._load.open_agent(self.agent_id)

    def on_stop(self) -> None:
        self._load.close_agent(self.agent_id)

    def wait_time(self) -> float:
        # Locust sleeps it between two tasks and ends that sleep at once when the agent is stopped.
        return self._think_time()

    @task
    def invoke_tool(self) -> None:
        if self._load.adapter is None:
            raise StopUser()  # the load could not start (its pool did not open): the run is ending
        tool = self._load.toolbox.pick(self._rng)
        self._load.adapter.call(tool, self.agent_id, self._rng.getrandbits(64))
