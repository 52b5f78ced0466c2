"""toolclash's part in Locust's life cycle: from the options to the exit code.

    init          validate the options, reach or start the servers, claim the schema
    test_start    seed the run's data, read the server's counters, open the pool
    test_stop     drain and close the pool, read the counters again, audit, report
    quitting      make sure the run was stopped and audited, set the exit code, stop the servers

Exit codes: 0 pass, 1 an SLA or an audit failed, 2 usage, configuration or connection error.
A configuration error is raised as SystemExit(2) from `init`: any other exception there would
become Locust's exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import Any, NoReturn

import psycopg
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, MasterRunner, Runner, WorkerRunner

from db.connect import ServiceUnreachable
from db.schema import SchemaRefused
from harness.coordinator import Coordinator
from harness.junit import write_junit
from harness.load import Load
from harness.matrix import MATRIX_LEVEL_VARIABLE, run_matrix
from harness.options import BadOption, Settings, add_arguments
from harness.report import format_summary, write_json
from harness.services import Services

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
        _fail_configuration("distributed runs (--master/--worker/--processes) are not supported yet")
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
    load = None
    if not isinstance(runner, MasterRunner):
        load = Load(settings, services.pg_dsn, services.redis_url, environment.events.request,
                    getattr(runner, "worker_index", 0))
    run = Toolclash(environment, settings, services, coordinator, load)
    _RUNS[environment] = run
    events = environment.events
    events.test_start.add_listener(run.on_test_start)
    events.spawning_complete.add_listener(run.on_spawning_complete)
    events.test_stop.add_listener(run.on_test_stop)
    events.quitting.add_listener(run.on_quitting)
    events.quit.add_listener(run.on_quit)


def _stop_quietly(coordinator: Coordinator | None, services: Services) -> None:
    if coordinator is not None:
        coordinator.close()
    services.stop()


class Toolclash:
    """One process's share of the run; `coordinator` and `load` are None where that role is elsewhere."""

    def __init__(
        self,
        environment: Environment,
        settings: Settings,
        services: Services,
        coordinator: Coordinator | None,
        load: Load | None,
    ) -> None:
        self.environment = environment
        self.settings = settings
        self.services = services
        self.coordinator = coordinator
        self.load = load
        self.report: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self._peak_agents = 0

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        agents = environment.runner.target_user_count or 0
        self._peak_agents = agents
        if self.coordinator is not None:
            self.coordinator.begin(agents)
        if self.load is not None:
            self.load.start(agents)

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        self._peak_agents = max(self._peak_agents, user_count)
        if self.load is not None:
            self.load.follow_agent_count(user_count)

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if self.load is not None:
            self.load.stop()
        if self.coordinator is None or not self.coordinator.running:
            return
        try:
            self.report = self.coordinator.finish(self.load.metrics, self._peak_agents)
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
        if self.report is not None:
            print(f"toolclash verdict: {self.report['verdict'].upper()} (exit code {exit_code})", flush=True)
