"""A worker's part: its share of the agents, on the servers and with the options the master
tells it at each test start (harness.distributed.worker_check); it ships their metrics with each
stats report, the final ones when the test stops (harness.distributed.shipments), and refuses a
test it cannot run."""

from __future__ import annotations

import logging
from typing import Any

from locust.env import Environment

from harness.config.declared import RUN_OPTIONS
from harness.config.option import BadOption
from harness.config.run_settings import fingerprint, settings_for_test
from harness.config.settings import Settings
from harness.distributed.shipments import REPORT_KEY, Message, ShipmentNumbers
from harness.distributed.worker_check import Shared, refusal
from harness.faults.chaos import WORKER_STOP_MESSAGE, stop_this_worker
from harness.output.history import History
from harness.run.load import new_load
from harness.run.role import Role

__all__ = ["Worker"]

log = logging.getLogger("toolclash")


class Worker(Role):
    """The agents' side of a distributed run; the master owns the servers and the schema, and says
    where they are at each test start."""

    def __init__(self, environment: Environment, settings: Settings, history: History | None) -> None:
        super().__init__(environment, settings, history)
        self._runner = environment.runner
        self.load = new_load(environment, settings, self._runner.worker_index, history)
        # This worker's own values of the options it must share with the master, and the master's,
        # told at each test start.
        self.own = Shared.given_to_worker(environment.parsed_options)
        self._masters: Shared | None = None
        _warn_of_own_run_options(environment.parsed_options)
        # What the master tells at each test start: which test (ramp) of its life, whether it
        # refused it, this worker's share of the agents (sizes its pool), the run id and seed.
        self._test = 0
        self._refused = False
        self._agents_here: int | None = None
        self._run_id = ""
        self._seed = 0
        self._shipment_numbers = ShipmentNumbers()
        # The fingerprint of this worker's settings for the current test, shipped with its metrics.
        self._fingerprint: str | None = None

    def listen(self) -> None:
        super().listen()
        self._runner.register_message(Message.CHECK, self.on_check_message)
        self._runner.register_message(Message.SERVERS, self.on_servers_message)
        # Concurrent: stopping waits for the agents, and the worker must keep answering heartbeats.
        self._runner.register_message(Message.STOP, lambda environment, msg, **_: environment.runner.stop(),
                                      concurrent=True)
        self._runner.register_message(Message.STAGE, self.on_stage_message)
        self._runner.register_message(WORKER_STOP_MESSAGE, stop_this_worker)
        self.environment.events.report_to_master.add_listener(self.on_report_to_master)

    def settings_for_test(self, options: Any) -> Settings:
        # The master's schema and MCP server, and the tools module's file (and the MCP server's
        # authorities) at this worker's own path if it was given one.
        fixed = {**self.fixed, "schema": self._masters.schema if self._masters else self.fixed["schema"]}
        if self.own.tools_module is not None:
            fixed["tools_module"] = self.own.tools_module
        if self._masters is not None:
            fixed.update(self.own.mcp_options(self._masters))
        return settings_for_test(options, fixed, judge=False)

    def _use(self, settings: Settings) -> None:
        super()._use(settings)
        self._fingerprint = fingerprint(settings)
        self.load.use(settings)

    # -- the master's messages --------------------------------------------------------------

    def on_check_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        """The master's values of the options a worker must share, before each test: answer
        whether this worker can run the test."""
        self._masters = Shared(**msg.data["shared"])
        reason = refusal(self.own, self._masters)
        if reason is not None:
            self._configuration_error(reason)
        environment.runner.send_message(Message.CHECKED, {"test": msg.data["test"], "refusal": reason})

    def on_servers_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._test, self._refused = msg.data["test"], msg.data.get("refused", False)
        if self._refused:
            return
        self.load.pg_dsn, self.load.redis_url = msg.data["pg_dsn"], msg.data["redis_url"]
        self.load.mcp_url = msg.data["mcp_url"]
        self._agents_here = msg.data["agents_per_worker"]
        self._run_id, self._seed = msg.data["run_id"], msg.data["seed"]

    def on_stage_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.load.stage = msg.data["index"]

    # -- a test -----------------------------------------------------------------------------

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        """Locust has copied the master's options into parsed_options."""
        self.hub_probe.start()
        agents = environment.runner.target_user_count or 0
        if self._refused:
            return  # the master refused the test; it is ending, with no load anywhere
        index = self._runner.worker_index
        if self._masters is None:
            return self._refuse(f"worker {index} joined after the test started: it was not told the master's"
                                " servers and options; it can run the next test")
        try:
            settings = self.settings_for_test(environment.parsed_options)
        except BadOption as exc:  # e.g. the tools module imports a package this host lacks
            self._configuration_error(str(exc))
            return self._refuse(f"worker {index}: {exc}")
        self._use(settings)
        if self.history is not None:
            self.history.run_started(self._run_id, self._seed)
        failure = self.load.start(self._agents_here or settings.most_agents(agents), self._seed)
        if failure is not None:
            self._runner.send_message(Message.LOAD_FAILED, failure)

    def _refuse(self, detail: str) -> None:
        """This worker cannot run the test: no load here, and the master ends the run (exit 2)."""
        failure = {"process": self._runner.worker_index, "kind": "worker_refused", "detail": detail}
        self.load.metrics.load_failures.append(failure)
        self._runner.send_message(Message.LOAD_FAILED, failure)

    def _shipment(self) -> dict[str, Any]:
        return {"test": self._test, "number": self._shipment_numbers.next(self._test),
                "metrics": self.load.take_metrics().to_dict(), "settings": self._fingerprint,
                "hub_lag": self.hub_probe.take().to_dict()}

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        data[REPORT_KEY] = self._shipment()
        if self.history is not None:
            # A worker may die without warning (--chaos worker-stop): it loses at most the lines
            # since its last stats report.
            self.history.flush()

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        self.hub_probe.stop()
        self.load.stop()
        if self.history is not None:
            self.history.flush()
        self._runner.send_message(Message.FINAL, self._shipment())


def _warn_of_own_run_options(options: Any) -> None:
    """A worker started with per-run options of its own runs the master's anyway: say so once."""
    given = [o.flag for o in RUN_OPTIONS if o.dest != "tools_module" and getattr(options, o.dest) != o.default]
    if given and not options.processes:  # --processes' workers have the master's options
        log.warning("this worker's %s will not be used: every test runs the master's per-run options",
                    ", ".join(given))
