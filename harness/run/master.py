"""A master's part: the judging side (harness.run.judge) of agents that run on its workers. It
checks the options every worker must share before each test (harness.distributed.worker_check),
tells them the servers, the run id and the seed, and sums their shipments
(harness.distributed.shipments); it times their heartbeats, and tells them the load shape's
stages."""

from __future__ import annotations

import logging
import math
from typing import Any

from locust.env import Environment

from harness.config.settings import Settings
from harness.distributed.shipments import REPORT_KEY, Message, WorkerShipments
from harness.distributed.worker_check import Shared, WorkerChecks
from harness.output.history import History
from harness.run.judge import Judge
from harness.run.services import Services
from harness.verdict.coordinator import Coordinator
from harness.watch.hub_lag import HeartbeatGaps
from harness.watch.metrics import Metrics

__all__ = ["Master"]

log = logging.getLogger("toolclash")


class Master(Judge):
    """The judging side, with the agents on the workers."""

    def __init__(self, environment: Environment, settings: Settings, history: History | None, services: Services,
                 coordinator: Coordinator) -> None:
        super().__init__(environment, settings, history, services, coordinator)
        self._runner = environment.runner
        self.shipments = WorkerShipments()
        self.checks = WorkerChecks()
        # The workers' heartbeats as they arrived (harness.watch.hub_lag).
        self.heartbeats = HeartbeatGaps()
        # Which test (ramp) of this process's life the shipments belong to: a worker's late final
        # shipment must not be counted in the next ramp of the web UI.
        self._test = 0

    def listen(self) -> None:
        super().listen()
        self._runner.register_message(Message.CHECKED, self.on_checked_message)
        self._runner.register_message(Message.FINAL, self.on_final_message)
        self._runner.register_message(Message.LOAD_FAILED, self.on_load_failed_message)
        events = self.environment.events
        events.worker_report.add_listener(self.on_worker_report)
        events.heartbeat_sent.add_listener(self.heartbeats.on_heartbeat)

    def live_metrics(self) -> Metrics:
        """The sum of the workers' shipments so far."""
        return self.shipments.total

    # -- the workers' messages --------------------------------------------------------------

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if REPORT_KEY in data:
            self.shipments.add(client_id, data[REPORT_KEY])

    def on_checked_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.checks.answer(msg.node_id, msg.data)

    def on_final_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.shipments.add(msg.node_id, msg.data, final=True)

    def on_load_failed_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        log.error("toolclash: worker %s could not start its load: %s", msg.node_id, msg.data["detail"])
        self._end_test_early()

    # -- a test -----------------------------------------------------------------------------

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.heartbeats.begin(self._runner.clients.keys())
        self._test += 1
        self.shipments.begin(self._runner, self._test)
        super().on_test_start(environment)

    def _check(self, settings: Settings) -> list[str]:
        """Every worker checks the options it must share with this master."""
        trace = settings.trace
        shared = Shared.of_master(self.services.pg_dsn, self.services.redis_url, settings.schema,
                                  settings.tools_module, settings.tools_digest, self.fixed,
                                  trace.path if trace else None, trace.sha256 if trace else None)
        message = {"test": self._test, "shared": shared.as_message()}
        return self.checks.wait(self._runner, self._test, lambda: self._runner.send_message(Message.CHECK, message))

    def _refuse_test(self, lines: list[str]) -> None:
        self._runner.send_message(Message.SERVERS, {"test": self._test, "refused": True})
        super()._refuse_test(lines)

    def _start_agents(self, agents: int) -> None:
        self._runner.send_message(Message.SERVERS, {
            "pg_dsn": self.services.pg_dsn, "redis_url": self.services.redis_url,
            "mcp_url": self.mcp.url if self.mcp is not None else None, "test": self._test,
            "run_id": self._run_id, "seed": self._seed,
            "agents_per_worker": math.ceil(self.settings.most_agents(agents) / max(1, self._runner.worker_count))})

    def on_stage(self, index: int, agents: int) -> None:
        super().on_stage(index, agents)
        self._runner.send_message(Message.STAGE, {"index": index})

    def _stop_load(self, environment: Environment) -> dict[str, Any]:
        self._runner.send_message(Message.STOP)
        lost = self.shipments.wait_for_finals(self._runner, environment.stop_timeout)
        return {
            "metrics": self.shipments.total,
            "hub_lags": {"master": self.hub_probe.take(),
                         **{f"worker {worker}": lag for worker, lag in self.shipments.hub_lags().items()}},
            "heartbeats": self.heartbeats.summary(),
            "workers": {"shipped": self.shipments.per_worker(), "lost": lost, "settings": self.shipments.settings(),
                        "shipments_lost": self.shipments.shipments_lost()},
        }
