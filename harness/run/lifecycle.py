"""toolclash's part in Locust's life cycle: from the options to the exit code.

    init          validate the options and open the --history file; where the verdict is made
                  (local runner or master): reach or start the servers and claim the schema
    test_start    read the test's settings from the per-run options as they are now (the command
                  line's, the web UI form's, or on a worker the master's: harness.config.run_settings);
                  on a master, have every worker check the options it must share, and refuse the
                  test before any load if one cannot (harness.distributed.worker_check); seed the run's data,
                  choose the run's seed (unless --seed gave it) and read the server's counters
                  (verdict side); open the pool (agents' side: local runner or worker)
    test_stop     drain and close the pool, flush the history; read the counters again, audit,
                  report (verdict side, once every worker's final metrics are in)
    quitting      make sure the run was stopped and audited, set the exit code, stop the servers,
                  close the history
    Ctrl-C        stops the run as its end would (see _audit_on_ctrl_c)

Where the verdict is made, with Locust's web UI, harness.web.panel adds the toolclash tab.

Exit codes: 0 pass, 1 an SLA or an audit failed, 2 usage, configuration or connection error.
A configuration error is raised as SystemExit(2) from `init`: any other exception there would
become Locust's exit 1.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from typing import Any, NoReturn

import gevent
import psycopg
import redis
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, MasterRunner, Runner, WorkerRunner

from db.connect import ServiceUnreachable, redact
from db.schema import SchemaRefused
from harness.config.options import RUN_OPTIONS, BadOption, Settings, add_arguments
from harness.config.run_settings import fingerprint, fixed_options, settings_for_test
from harness.config.shapes import AgentStages
from harness.distributed.shipments import (
    CHECK_MESSAGE,
    CHECKED_MESSAGE,
    FINAL_MESSAGE,
    LOAD_FAILED_MESSAGE,
    REPORT_KEY,
    SERVERS_MESSAGE,
    STAGE_MESSAGE,
    STOP_MESSAGE,
    ShipmentNumbers,
    WorkerShipments,
)
from harness.distributed.worker_check import Shared, WorkerChecks, refusal
from harness.faults.chaos import WORKER_STOP_MESSAGE, stop_this_worker
from harness.output.history import History, worker_path
from harness.output.html import add_to_html_report, install_on_web_ui, pending_section, section
from harness.output.summary import publish
from harness.run.load import Load, new_load
from harness.run.matrix import MATRIX_LEVEL_VARIABLE, run_matrix
from harness.run.services import Services
from harness.verdict.coordinator import Coordinator
from harness.verdict.evidence import CONFIGURATION_ERROR
from harness.watch.hub_lag import HeartbeatGaps, HubLagProbe
from harness.watch.metrics import Metrics
from harness.web.panel import Panel
from harness.web.start_form import check_start_form

__all__ = ["install", "Toolclash"]

log = logging.getLogger("toolclash")

def install(events: Any) -> None:
    """Hook toolclash into a locustfile's events."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def _fail_configuration(message: str) -> NoReturn:
    print(f"toolclash: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIGURATION_ERROR)


def _on_init(environment: Environment, runner: Runner, web_ui: Any = None, **_: Any) -> None:
    options = environment.parsed_options
    worker = isinstance(runner, WorkerRunner)
    try:
        settings = Settings.from_options(options, judge=not worker)
    except BadOption as exc:
        _fail_configuration(str(exc))
    if settings.isolation_matrix and MATRIX_LEVEL_VARIABLE not in os.environ:
        if not environment.parsed_options.headless:
            _fail_configuration("--isolation-matrix runs headless: add --headless")
        raise SystemExit(run_matrix(sys.argv[1:], settings.report_json, settings.history, settings.seed_for_test(),
                                    settings.required_levels))
    history = _open_history(settings.history, runner) if settings.history else None
    _audit_on_ctrl_c()
    if worker:
        # The master owns the servers and the schema; it says where they are at each test start.
        run = Toolclash(environment, settings, None, None, new_load(environment, settings, runner.worker_index,
                                                                     history), history)
        run.own = Shared.given_to_worker(options)
        _warn_of_own_run_options(options)
        runner.register_message(CHECK_MESSAGE, run.on_check_message)
        runner.register_message(SERVERS_MESSAGE, run.on_servers_message)
        # Concurrent: stopping waits for the agents, and the worker must keep answering heartbeats.
        runner.register_message(STOP_MESSAGE, lambda environment, msg, **_: environment.runner.stop(),
                                concurrent=True)
        runner.register_message(STAGE_MESSAGE, run.on_stage_message)
        runner.register_message(WORKER_STOP_MESSAGE, stop_this_worker)
    else:
        services, coordinator = _reach_servers(settings)
        users = settings.most_agents(environment.parsed_options.num_users or 0)
        if users:  # known before any load in a headless run; a web-UI ramp is checked when it starts
            processes = environment.parsed_options.expect_workers if isinstance(runner, MasterRunner) else 1
            too_many = coordinator.connections_refused(users, processes)
            if too_many:
                _stop_quietly(coordinator, services)
                _fail_configuration(too_many)
        load = None
        if not isinstance(runner, MasterRunner):
            load = new_load(environment, settings, 0, history)
            load.pg_dsn, load.redis_url = services.pg_dsn, services.redis_url
        run = Toolclash(environment, settings, services, coordinator, load, history)
        coordinator.attach(runner)
        _name_the_servers(environment, services)
        if web_ui is not None:
            Panel(run, environment, settings, web_ui)
            install_on_web_ui(web_ui, run.html_section)
            check_start_form(environment, web_ui, run.settings_for_test)
        if isinstance(runner, MasterRunner):
            runner.register_message(CHECKED_MESSAGE, run.on_checked_message)
            runner.register_message(FINAL_MESSAGE, run.on_final_message)
            runner.register_message(LOAD_FAILED_MESSAGE, run.on_load_failed_message)
            environment.events.worker_report.add_listener(run.on_worker_report)
            run.heartbeats = HeartbeatGaps()
            environment.events.heartbeat_sent.add_listener(run.heartbeats.on_heartbeat)
        if settings.shape_stages:
            shape = AgentStages(settings.shape_stages, settings.shape_hold_s,
                                environment.parsed_options.spawn_rate or max(settings.shape_stages), run.on_stage)
            shape.runner = runner
            environment.shape_class = shape
    events = environment.events
    events.test_start.add_listener(run.on_test_start)
    events.spawning_complete.add_listener(run.on_spawning_complete)
    events.test_stop.add_listener(run.on_test_stop)
    events.report_to_master.add_listener(run.on_report_to_master)
    events.quitting.add_listener(run.on_quitting)
    events.quit.add_listener(run.on_quit)


def _audit_on_ctrl_c() -> None:
    """Ctrl-C stops the run as Locust does (its main greenlet gets the KeyboardInterrupt, and
    `quitting` stops and audits the run), but never in an agent's greenlet: Python raises a
    SIGINT's KeyboardInterrupt in whatever code runs when it arrives, often an agent's tool call,
    whose greenlet then dies with a traceback. Here the signal is handled by gevent, in a greenlet
    of its own, which hands the interrupt to the main greenlet. A second Ctrl-C exits at once,
    without the audit (exit code 2)."""
    main = gevent.get_hub().parent
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:
            print("toolclash: interrupted again: exiting without the audit (the run's data stays as it is:"
                  " the next run on this schema needs --reset)", file=sys.stderr, flush=True)
            main.throw(SystemExit(CONFIGURATION_ERROR))
        interrupted = True
        main.throw(KeyboardInterrupt())

    gevent.signal_handler(signal.SIGINT, on_sigint)


def _name_the_servers(environment: Environment, services: Services) -> None:
    """Locust's `host` of the agents: the servers under test (passwords redacted), shown in the
    web UI and the HTML report instead of a missing host."""
    servers = f"{redact(services.pg_dsn)} {redact(services.redis_url)}"
    for user_class in environment.user_classes:
        if not user_class.host:
            user_class.host = servers


def _warn_of_own_run_options(options: Any) -> None:
    """A worker started with per-run options of its own runs the master's anyway: say so once."""
    given = [o.flag for o in RUN_OPTIONS if o.dest != "tools_module" and getattr(options, o.dest) != o.default]
    if given and not options.processes:  # --processes' workers have the master's options
        log.warning("this worker's %s will not be used: every test runs the master's per-run options",
                    ", ".join(given))


def _open_history(path: str, runner: Runner) -> History:
    """This process's history file: a worker's is named after its index, on its own host."""
    if isinstance(runner, WorkerRunner):
        path, process = worker_path(path, runner.worker_index), f"worker-{runner.worker_index}"
    else:
        process = "master" if isinstance(runner, MasterRunner) else "local"
    try:
        return History(path, process)
    except OSError as exc:
        _fail_configuration(f"--history {path}: cannot write there: {exc.strerror or exc}")


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
        history: History | None = None,
    ) -> None:
        self.environment = environment
        self.settings = settings
        self.services = services
        self.coordinator = coordinator
        self.load = load
        self.history = history
        self.shipments = WorkerShipments()
        self._shipment_numbers = ShipmentNumbers()  # a worker's
        self.report: dict[str, Any] | None = None
        # The worst exit code of the tests (web-UI ramps) so far: the process's exit code.
        self.exit_code: int | None = None
        self.verdicts: list[str] = []  # each audited test's verdict, in order
        self.audit_error: str | None = None  # why the current test could not be audited
        self._peak_agents = 0
        self._stages: list[dict[str, Any]] = []
        # Which test (ramp) of this process's life the shipments belong to: a worker's late final
        # shipment must not be counted in the next ramp of the web UI.
        self._test = 0
        # A worker's share of the agents, told by the master at each test start (sizes its pool).
        self._agents_here: int | None = None
        # The test's run id and seed: chosen where the verdict is made, told to the workers.
        self._run_id = ""
        self._seed = 0
        # The options fixed when this process started (Locust overwrites a worker's parsed_options
        # with the master's at each spawn message).
        self.fixed = fixed_options(environment.parsed_options)
        # A worker's own values of the options it must share with the master (None elsewhere),
        # and the master's, told at each test start.
        self.own: Shared | None = None
        self._masters: Shared | None = None
        self.checks = WorkerChecks()
        # The fingerprint of this process's settings for the current test.
        self._fingerprint: str | None = None
        # This test was refused (a worker's options are not the master's): no load starts.
        self._refused = False
        # Whether this process's event loop kept its schedule during the test (harness.watch.hub_lag);
        # on a master, also the workers' heartbeats as they arrived.
        self.hub_probe = HubLagProbe()
        self.heartbeats: HeartbeatGaps | None = None

    @property
    def _master(self) -> MasterRunner | None:
        runner = self.environment.runner
        return runner if isinstance(runner, MasterRunner) else None

    def settings_for_test(self, options: Any) -> Settings:
        """This process's settings for a test started with `options` (Locust's parsed_options as
        they are at that test's start); raises BadOption."""
        if self.own is None:
            return settings_for_test(options, self.fixed)
        # A worker: the master's schema, and the tools module's file at its own path if it was given one.
        fixed = {**self.fixed, "schema": self._masters.schema if self._masters else self.fixed["schema"]}
        if self.own.tools_module is not None:
            fixed["tools_module"] = self.own.tools_module
        return settings_for_test(options, fixed, judge=False)

    def _use(self, settings: Settings) -> None:
        self.settings = settings
        self._fingerprint = fingerprint(settings)
        if self.coordinator is not None:
            self.coordinator.use(settings)
        if self.load is not None:
            self.load.use(settings)
        if settings.chaos:
            # psycopg_pool warns of every connection it finds dead: under --chaos, those are the
            # faults the run injects on purpose, counted in the report, not news.
            logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    # -- the agents' side -------------------------------------------------------------------

    def on_check_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        """The master's values of the options a worker must share, before each test: answer
        whether this worker can run the test."""
        self._masters = Shared(**msg.data["shared"])
        reason = refusal(self.own, self._masters)
        if reason is not None:
            print(f"toolclash: error: {reason}", file=sys.stderr, flush=True)
            self.exit_code = CONFIGURATION_ERROR
        environment.runner.send_message(CHECKED_MESSAGE, {"test": msg.data["test"], "refusal": reason})

    def on_servers_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._test, self._refused = msg.data["test"], msg.data.get("refused", False)
        if self._refused:
            return
        self.load.pg_dsn, self.load.redis_url = msg.data["pg_dsn"], msg.data["redis_url"]
        self._agents_here = msg.data["agents_per_worker"]
        self._run_id, self._seed = msg.data["run_id"], msg.data["seed"]

    def _start_worker_test(self, environment: Environment, agents: int) -> None:
        """A worker's test start: Locust has copied the master's options into parsed_options."""
        if self._refused:
            return  # the master refused the test; it is ending, with no load anywhere
        index = environment.runner.worker_index
        if self._masters is None:
            return self._refuse_worker(f"worker {index} joined after the test started: it was not told the master's"
                                       " servers and options; it can run the next test")
        try:
            settings = self.settings_for_test(environment.parsed_options)
        except BadOption as exc:  # e.g. the tools module imports a package this host lacks
            print(f"toolclash: error: {exc}", file=sys.stderr, flush=True)
            self.exit_code = CONFIGURATION_ERROR
            return self._refuse_worker(f"worker {index}: {exc}")
        self._use(settings)
        if self.history is not None:
            self.history.run_started(self._run_id, self._seed)
        failure = self.load.start(self._agents_here or settings.most_agents(agents), self._seed)
        if failure is not None:
            environment.runner.send_message(LOAD_FAILED_MESSAGE, failure)

    def _refuse_worker(self, detail: str) -> None:
        """This worker cannot run the test: no load here, and the master ends the run (exit 2)."""
        failure = {"process": self.environment.runner.worker_index, "kind": "worker_refused", "detail": detail}
        self.load.metrics.load_failures.append(failure)
        self.environment.runner.send_message(LOAD_FAILED_MESSAGE, failure)

    def _shipment(self) -> dict[str, Any]:
        return {"test": self._test, "number": self._shipment_numbers.next(self._test),
                "metrics": self.load.take_metrics().to_dict(), "settings": self._fingerprint,
                "hub_lag": self.hub_probe.take().to_dict()}

    def on_stage_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.load.stage = msg.data["index"]

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if self.load is not None:
            data[REPORT_KEY] = self._shipment()
        if self.history is not None:
            # A worker may die without warning (--chaos worker-stop): it loses at most the lines
            # since its last stats report.
            self.history.flush()

    # -- the verdict's side -----------------------------------------------------------------

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

    def server_samples(self) -> list[dict[str, Any]]:
        return self.coordinator.samples

    def live_metrics(self) -> Metrics:
        """What the agents recorded in the current (or last) test so far: this process's, or on
        a master the sum of the workers' shipments."""
        return self.load.metrics if self.load is not None else self.shipments.total

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.audit_error = None
        self.hub_probe.start()
        if self.heartbeats is not None:
            self.heartbeats.begin(environment.runner.clients.keys())
        agents = environment.runner.target_user_count or 0
        self._peak_agents = agents
        if isinstance(environment.runner, WorkerRunner):
            return self._start_worker_test(environment, agents)
        master = self._master
        if master is not None:
            self._test += 1
            self.shipments.begin(master, self._test)
        refusals = self._prepare_test(environment)
        if refusals:
            return self._refuse_test(refusals)
        self._seed = self.settings.seed_for_test()
        self._run_id = self.coordinator.begin(agents, lambda: environment.runner.user_count, self._seed)
        if master is not None:
            master.send_message(SERVERS_MESSAGE, {"pg_dsn": self.services.pg_dsn, "redis_url": self.services.redis_url,
                                                  "test": self._test, "run_id": self._run_id, "seed": self._seed,
                                                  "agents_per_worker": math.ceil(self.settings.most_agents(agents)
                                                                                 / max(1, master.worker_count))})
        if self.history is not None:
            self.history.run_started(self._run_id, self._seed)
        if self.load is not None and self.load.start(self.settings.most_agents(agents), self._seed) is not None:
            self._end_test_early()

    def _prepare_test(self, environment: Environment) -> list[str]:
        """Where the verdict is made, before any load: this test's settings, and every worker's
        check of the options it must share; what refuses the test, one line each."""
        try:
            settings = self.settings_for_test(environment.parsed_options)
        except BadOption as exc:
            return [str(exc)]
        master = self._master
        if master is not None:
            shared = Shared(self.services.pg_dsn, self.services.redis_url, settings.schema, settings.tools_module,
                            settings.tools_digest)
            message = {"test": self._test, "shared": shared.as_message()}
            refusals = self.checks.wait(master, self._test, lambda: master.send_message(CHECK_MESSAGE, message))
            if refusals:
                return refusals
        self._use(settings)
        return []

    def _refuse_test(self, lines: list[str]) -> None:
        """The test cannot run as asked: say why, end it before any load, exit code 2."""
        headless = self.environment.parsed_options.headless
        for line in lines:
            if headless:
                print(f"toolclash: error: {line}", file=sys.stderr, flush=True)
            else:  # the web UI's log shows it
                log.error("toolclash: error: %s", line)
        self.exit_code = CONFIGURATION_ERROR
        if self._master is not None:
            self._master.send_message(SERVERS_MESSAGE, {"test": self._test, "refused": True})
        self._end_test_early()

    def _end_test_early(self) -> None:
        """A load process could not start: end the run now (it is judged on what it has), rather
        than let agents without a pool run out the clock."""
        runner = self.environment.runner
        gevent.spawn(runner.quit if self.environment.parsed_options.headless else runner.stop)

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        self._peak_agents = max(self._peak_agents, user_count)

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        self.hub_probe.stop()  # the load is over: the audit's pace is not the run's
        if self.load is not None:
            self.load.stop()
            if self.history is not None:
                self.history.flush()
            if isinstance(environment.runner, WorkerRunner):
                environment.runner.send_message(FINAL_MESSAGE, self._shipment())
                return
        if self.coordinator is None or not self.coordinator.running:
            return
        workers = None
        if self._master is not None:
            self._master.send_message(STOP_MESSAGE)
            lost = self.shipments.wait_for_finals(self._master, environment.stop_timeout)
            metrics = self.shipments.total
            workers = {"shipped": self.shipments.per_worker(), "lost": lost, "settings": self.shipments.settings(),
                       "shipments_lost": self.shipments.shipments_lost()}
            hub_lags = {"master": self.hub_probe.take(),
                        **{f"worker {worker}": lag for worker, lag in self.shipments.hub_lags().items()}}
        else:
            metrics = self.load.metrics
            hub_lags = {"local runner": self.hub_probe.take()}
        heartbeats = self.heartbeats.summary() if self.heartbeats is not None else None
        try:
            self.report = self.coordinator.finish(metrics, self._peak_agents, hub_lags, heartbeats, workers,
                                                  self._stages)
        except (psycopg.Error, redis.RedisError) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(f"toolclash: error: could not audit the run: {reason}", file=sys.stderr, flush=True)
            self.audit_error = reason
            self.exit_code = CONFIGURATION_ERROR
            return
        self.exit_code = max(self.exit_code or 0, self.report["exit_code"])
        self.verdicts.append(self.report["verdict"])
        publish(self.report, self.settings.report_json, self.settings.junit_xml)

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        # On Ctrl-C Locust fires `quitting` before it stops the runner: stop it here, so the run
        # is audited and its verdict is the exit code.
        if environment.runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
            environment.runner.stop()
        if self.exit_code is not None:
            environment.process_exit_code = self.exit_code
        _stop_quietly(self.coordinator, self.services)
        if self.history is not None:
            self.history.close()

    def html_section(self) -> str:
        """toolclash's section of Locust's HTML report, for the test Locust's figures are about:
        the last one started."""
        report = self.report
        if report is not None and report["run"]["run_id"] == self._run_id:
            return section(report)
        if not self._run_id:
            return pending_section("No test has run yet: toolclash audits a test and decides its verdict when it"
                                   " stops.")
        if self.audit_error is not None:
            return pending_section(f"Run {self._run_id} could not be audited ({self.audit_error}): it has no"
                                   " verdict.")
        return pending_section(f"Run {self._run_id} has not been audited yet: toolclash audits a test and decides its"
                               " verdict when it stops. Download the report again then.")

    def on_quit(self, exit_code: int, **_: Any) -> None:
        # Locust has written its HTML report by now (with --html; its name's {u}/{r}/{t} filled in).
        html_file = getattr(self.environment.parsed_options, "html_file", None)
        if self.coordinator is not None and html_file and os.path.exists(html_file):
            add_to_html_report(html_file, self.html_section())
        if self.report is not None:
            verdict, ramps = self.report["verdict"].upper(), ""
            if len(self.verdicts) > 1:  # web-UI ramps: the exit code is the worst one's
                verdict = "FAIL" if "fail" in self.verdicts else verdict
                ramps = f", the worst of {len(self.verdicts)} ramps: {', '.join(v.upper() for v in self.verdicts)}"
            print(f"toolclash verdict: {verdict} (exit code {exit_code}{ramps})", flush=True)
