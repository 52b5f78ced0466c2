"""A local runner's part: the judging side (harness.run.judge) and the agents, in one process."""

from __future__ import annotations

from typing import Any

from locust.env import Environment

from harness.config.settings import Settings
from harness.output.history import History
from harness.run.judge import Judge
from harness.run.load import new_load
from harness.run.services import Services
from harness.verdict.coordinator import Coordinator
from harness.watch.metrics import Metrics

__all__ = ["Local"]


class Local(Judge):
    """The judging side with its own load, on the servers it reached."""

    def __init__(self, environment: Environment, settings: Settings, history: History | None, services: Services,
                 coordinator: Coordinator) -> None:
        super().__init__(environment, settings, history, services, coordinator)
        self.load = new_load(environment, settings, 0, history)
        self.load.pg_dsn, self.load.redis_url = services.pg_dsn, services.redis_url

    def live_metrics(self) -> Metrics:
        return self.load.metrics

    def _use(self, settings: Settings) -> None:
        super()._use(settings)
        self.load.use(settings)

    def _start_agents(self, agents: int) -> None:
        self.load.mcp_url = self.mcp.url if self.mcp is not None else None
        if self.load.start(self.settings.most_agents(agents), self._seed) is not None:
            self._end_test_early()

    def on_stage(self, index: int, agents: int) -> None:
        super().on_stage(index, agents)
        self.load.stage = index

    def _stop_load(self, environment: Environment) -> dict[str, Any]:
        self.load.stop()
        if self.history is not None:
            self.history.flush()
        return {"metrics": self.load.metrics, "hub_lags": {"local runner": self.hub_probe.take()}}
