"""toolclash's part in Locust's life cycle: from the options to the exit code.

    init          validate the options; where the verdict is made (local runner or master): reach
                  or start the servers and claim the schema
    test_start    seed the run's data and read the server's counters (verdict side); open the
                  pool (agents' side: local runner or worker)
    test_stop     drain and close the pool; read the counters again, audit, report (verdict side,
                  once every worker's final metrics are in)
    quitting      make sure the run was stopped and audited, set the exit code, stop the servers

Exit codes: 0 pass, 1 an SLA or an audit failed, 2 usage, configuration or connection error.
A configuration error is raised as SystemExit(2) from `init`: any other exception there would
become Locust's exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import weakref
from typing import Any, NoReturn

import psycopg
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, MasterRunner, Runner, WorkerRunner

from db.connect import ServiceUnreachable
from db.schema import SchemaRefused
from harness.coordinator import Coordinator
from harness.distributed import (
    FINAL_MESSAGE,
    REPORT_KEY,
    SERVERS_MESSAGE,
    STAGE_MESSAGE,
    STOP_MESSAGE,
    WorkerShipments,
)
from harness.html_report import add_to_html_report
from harness.junit import write_junit
from harness.load import Load
from harness.matrix import MATRIX_LEVEL_VARIABLE, run_matrix
from harness.options import BadOption, Settings, add_arguments
from harness.report import format_summary, write_json
from harness.services import Services
from harness.shapes import AgentStages

__all__ = ["install", "toolclash_of", "Toolclash", "CONFIGURATION_ERROR"]

log = logging.getLogger("toolclash")

CONFIGURATION_ERROR = 2

_RUNS: weakref.WeakKeyDictionary[Environment, Toolclash] = weakref.WeakKeyDictionary()


def install(events: Any) -> None:
    """Hook toolclash into a locustfile's events."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def toolclash_of(environment: Environment) -> Toolclash:
    return _RUNS[environment]


def _fail_configuration(message: str) -> NoReturn:
    print(f"toolclash: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIGURATION_ERROR)


def _on_init(environment: Environment, runner: Runner, **_: Any) -> None:
    try:
        settings = Settings.from_options(environment.parsed_options)
    except BadOption as exc:
        _fail_configuration(str(exc))
    if settings.isolation_matrix and MATRIX_LEVEL_VARIABLE not in os.environ:
        if not environment.parsed_options.headless:
            _fail_configuration("--isolation-matrix runs headless: add --headless")
        raise SystemExit(run_matrix(sys.argv[1:], settings.report_json))
    if isinstance(runner, WorkerRunner):
        # The master owns the servers and the schema; it says where they are at each test start.
        run = Toolclash(environment, settings, None, None, Load(settings, environment.events.request,
                                                                 runner.worker_index))
        runner.register_message(SERVERS_MESSAGE, run.on_servers_message)
        # Concurrent: stopping waits for the agents, and the worker must keep answering heartbeats.
        runner.register_message(STOP_MESSAGE, lambda environment, msg, **_: environment.runner.stop(),
                                concurrent=True)
        runner.register_message(STAGE_MESSAGE, run.on_stage_message)
    else:
        services, coordinator = _reach_servers(settings)
        load = None
        if not isinstance(runner, MasterRunner):
            load = Load(settings, environment.events.request, 0)
            load.pg_dsn, load.redis_url = services.pg_dsn, services.redis_url
        run = Toolclash(environment, settings, services, coordinator, load)
        if isinstance(runner, MasterRunner):
            runner.register_message(FINAL_MESSAGE, run.on_final_message)
            environment.events.worker_report.add_listener(run.on_worker_report)
        if settings.shape_stages:
            shape = AgentStages(settings.shape_stages, settings.shape_hold_s,
                                environment.parsed_options.spawn_rate or max(settings.shape_stages), run.on_stage)
            shape.runner = runner
            environment.shape_class = shape
    _RUNS[environment] = run
    events = environment.events
    events.test_start.add_listener(run.on_test_start)
    events.spawning_complete.add_listener(run.on_spawning_complete)
    events.test_stop.add_listener(run.on_test_stop)
    events.report_to_master.add_listener(run.on_report_to_master)
    events.quitting.add_listener(run.on_quitting)
    events.quit.add_listener(run.on_quit)


def _reach_servers(settings: Settings) -> tuple[Services, Coordinator]:
    services = Services(settings.pg_dsn, settings.redis_url)
    coordinator = None
    try:
        services.start()
        coordinator = Coordinator(settings, services.pg_dsn, services.redis_url, services.infos)
        coordinator.open()
    except (ServiceUnreachable, SchemaRefused) as exc:
        _stop_quietly(coordinator, services)
        _fail_configuration(str(exc))
    except psycopg.Error as exc:
        _stop_quietly(coordinator, services)
        _fail_configuration(f"while preparing schema {settings.schema!r}: {type(exc).__name__}: {exc}".splitlines()[0])
    for info in services.infos:
        log.info("toolclash uses %s", info.describe())
    return services, coordinator


def _stop_quietly(coordinator: Coordinator | None, services: Services | None) -> None:
    if coordinator is not None:
        coordinator.close()
    if services is not None:
        services.stop()


class Toolclash:
    """One process's share of the run; `coordinator` (the verdict's side) and `load` (the
    agents' side) are None where that role is in another process."""

    def __init__(
        self,
        environment: Environment,
        settings: Settings,
        services: Services | None,
        coordinator: Coordinator | None,
        load: Load | None,
    ) -> None:
        self.environment = environment
        self.settings = settings
        self.services = services
        self.coordinator = coordinator
        self.load = load
        self.shipments = WorkerShipments()
        self.report: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self._peak_agents = 0
        self._stages: list[dict[str, Any]] = []

    @property
    def _master(self) -> MasterRunner | None:
        runner = self.environment.runner
        return runner if isinstance(runner, MasterRunner) else None

    # -- the agents' side -------------------------------------------------------------------

    def on_servers_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.load.pg_dsn, self.load.redis_url = msg.data["pg_dsn"], msg.data["redis_url"]

    def on_stage_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.load.stage = msg.data["index"]

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if self.load is not None:
            data[REPORT_KEY] = self.load.take_metrics().to_dict()

    # -- the verdict's side -----------------------------------------------------------------

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if REPORT_KEY in data:
            self.shipments.add(client_id, data[REPORT_KEY])

    def on_final_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.shipments.add(msg.node_id, msg.data, final=True)

    def on_stage(self, index: int, agents: int) -> None:
        """The load shape entered a stage: count calls by stage from now on, here or on the workers."""
        if index == 0:
            self._stages = []
        self._stages.append({"stage": index, "agents": agents, "started": time.monotonic()})
        if self.load is not None:
            self.load.stage = index
        if self._master is not None:
            self._master.send_message(STAGE_MESSAGE, {"index": index})

    # -- both -------------------------------------------------------------------------------

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        agents = environment.runner.target_user_count or 0
        self._peak_agents = agents
        if self.coordinator is not None:
            self.coordinator.begin(agents, lambda: environment.runner.user_count)
        if self._master is not None:
            self.shipments.begin(self._master)
            self._master.send_message(SERVERS_MESSAGE, {"pg_dsn": self.services.pg_dsn,
                                                        "redis_url": self.services.redis_url})
        if self.load is not None:
            self.load.start(agents)

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        self._peak_agents = max(self._peak_agents, user_count)
        if self.load is not None:
            # Each process's own agents (on a worker, its share of user_count).
            self.load.follow_agent_count(self.environment.runner.user_count)

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if self.load is not None:
            self.load.stop()
            if isinstance(environment.runner, WorkerRunner):
                environment.runner.send_message(FINAL_MESSAGE, self.load.take_metrics().to_dict())
                return
        if self.coordinator is None or not self.coordinator.running:
            return
        workers = None
        if self._master is not None:
            self._master.send_message(STOP_MESSAGE)
            lost = self.shipments.wait_for_finals(self._master, environment.stop_timeout)
            metrics = self.shipments.total
            workers = {"shipped": self.shipments.per_worker(), "lost": lost}
        else:
            metrics = self.load.metrics
        try:
            self.report = self.coordinator.finish(metrics, self._peak_agents, workers, self._stages)
        except psycopg.Error as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"toolclash: error: could not audit the run: {reason}", file=sys.stderr, flush=True)
            self.exit_code = CONFIGURATION_ERROR
            return
        self.exit_code = self.report["exit_code"]
        print(format_summary(self.report), flush=True)
        if self.settings.report_json:
            write_json(self.report, self.settings.report_json)
        if self.settings.junit_xml:
            write_junit(self.report, self.settings.junit_xml)

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        # On Ctrl-C Locust fires `quitting` before it stops the runner: stop it here, so the run
        # is audited and its verdict is the exit code.
        if environment.runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
            environment.runner.stop()
        if self.exit_code is not None:
            environment.process_exit_code = self.exit_code
        _stop_quietly(self.coordinator, self.services)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        # Locust has written its HTML report by now (with --html; its name's {u}/{r}/{t} filled in).
        html_file = getattr(self.environment.parsed_options, "html_file", None)
        if self.report is not None and html_file and os.path.exists(html_file):
            add_to_html_report(html_file, self.report)
        if self.report is not None:
            print(f"toolclash verdict: {self.report['verdict'].upper()} (exit code {exit_code})", flush=True)

