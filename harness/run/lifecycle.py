"""toolclash's part in Locust's life cycle: from the options to the exit code.

Each process takes a role from its runner's type, one class each, and answers Locust's events
(and its side's messages) through it:

    harness.run.local     a local runner: judges the run (harness.run.judge) and runs the agents
    harness.run.master    a master: judges the run; its workers run the agents
    harness.run.worker    a worker: runs its share of the agents, on the master's servers

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

Where the verdict is made, with Locust's web UI, harness.web.panel adds the toolclash tab; and
harness.export.prometheus serves /metrics (on the web UI's port, and on --metrics-port), and
harness.export.otlp pushes the same figures when OpenTelemetry's variables name an OTLP endpoint.

Exit codes: 0 pass, 1 an SLA or an audit failed, 2 usage, configuration or connection error.
A configuration error is raised as SystemExit(2) from `init`: any other exception there would
become Locust's exit 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import replace
from typing import Any, NoReturn

import gevent
import psycopg
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner

from db.connect import ServiceUnreachable, redact, redacted_url
from db.schema import SchemaRefused
from harness.capacity.plan import PROBE_VARIABLE
from harness.config.declared import add_arguments
from harness.config.mcp import McpTarget
from harness.config.option import BadOption
from harness.config.settings import Settings
from harness.config.shapes import AgentStages
from harness.export.otlp import OtlpPush, OtlpRefused, otlp_wanted
from harness.export.prometheus import MetricsEndpoint, serve_metrics
from harness.output.history import History, worker_path
from harness.run.capacity import CapacitySearch, ChildRunProbes
from harness.run.judge import Judge
from harness.run.local import Local
from harness.run.master import Master
from harness.run.master_probes import SearchOnMaster, TestProbes
from harness.run.matrix import MATRIX_LEVEL_VARIABLE, run_matrix
from harness.run.probe_shape import ProbeShape, probe_plan
from harness.run.services import Services
from harness.run.worker import Worker
from harness.verdict.coordinator import Coordinator
from harness.verdict.evidence import CONFIGURATION_ERROR
from harness.web.capacity_view import show_capacity_search
from harness.web.panel import Panel
from harness.web.report_download import install_on_web_ui
from harness.web.start_form import check_start_form

__all__ = ["install"]

log = logging.getLogger("toolclash")


def install(events: Any) -> None:
    """Hook toolclash into a locustfile's events."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def _fail_configuration(message: str) -> NoReturn:
    print(f"toolclash: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIGURATION_ERROR)


def _on_init(environment: Environment, runner: Runner, web_ui: Any = None, **_: Any) -> None:
    """This process's role, from its runner's type: a worker runs agents for its master; a local
    runner or a master judges the run (harness.run.judge)."""
    worker = isinstance(runner, WorkerRunner)
    try:
        settings = Settings.from_options(environment.parsed_options, judge=not worker)
    except BadOption as exc:
        if worker and environment.parsed_options.processes:
            # Forked by --processes: its master refuses the same command line (a worker's settings
            # are a part of a judge's) and says why, once.
            raise SystemExit(CONFIGURATION_ERROR) from None
        _fail_configuration(str(exc))
    if settings.isolation_matrix and MATRIX_LEVEL_VARIABLE not in os.environ:
        if not environment.parsed_options.headless:
            _fail_configuration("--isolation-matrix runs headless: add --headless")
        raise SystemExit(run_matrix(sys.argv[1:], settings.report_json, settings.history, settings.seed_for_test(),
                                    settings.required_levels))
    # A search on a master whose workers connect from elsewhere runs in it, each probe a test of it.
    on_master = isinstance(runner, MasterRunner) and not environment.parsed_options.processes
    if settings.capacity is not None and PROBE_VARIABLE not in os.environ:
        if worker:  # forked by --processes (Settings refuses any other worker): each probe starts its own
            raise SystemExit(0)
        if not on_master:
            return _search_capacity(environment, settings, web_ui)
        settings = replace(settings, reset=True)  # the first probe's data seeded afresh, as a child run's
    history = _open_history(settings.history, runner) if settings.history else None
    _audit_on_ctrl_c()
    if worker:
        Worker(environment, settings, history).listen()
        return
    judge = _judge(environment, runner, settings, history, web_ui)
    judge.listen()
    _publish_metrics(judge, environment, settings.metrics_port, web_ui)
    if settings.capacity is not None:
        _search_on_master(environment, settings, judge)


def _search_on_master(environment: Environment, settings: Settings, judge: Judge) -> None:
    """--capacity on a headless --master (harness.run.master_probes): Locust starts the search as
    its load shape once --expect-workers workers are in; the search's answer is the exit code."""
    assert isinstance(judge, Master)
    options = environment.parsed_options
    search = CapacitySearch(settings, TestProbes(judge, options.expect_workers), options.html_file)
    options.html_file = None  # the search writes its own page: Locust's, of the last probe, would overwrite it
    options.only_summary = True  # no table of Locust's every few seconds: the search prints each probe
    environment.shape_class = SearchOnMaster(search, judge)


def _search_capacity(environment: Environment, settings: Settings, web_ui: Any) -> None:
    """--capacity: headless, the search and its exit code; with the web UI, the search runs in
    the background, the web UI's address shows it (harness.web.capacity_view), and it starts no test."""
    options = environment.parsed_options
    search = CapacitySearch(settings, ChildRunProbes(sys.argv[1:], settings, bool(options.processes)),
                            options.html_file)
    if options.headless:
        raise SystemExit(search.run())
    if web_ui is None or options.autostart:
        _fail_configuration("--capacity shows its search in the web UI and starts no test there: run it with"
                            " --headless, or with the web UI and without --autostart")
    show_capacity_search(search, web_ui, options.web_base_path or "")
    _audit_on_ctrl_c()  # Ctrl-C to the main greenlet (Locust quits), never into the search's
    gevent.spawn(search.run)

    def exit_code(environment: Environment, **_: Any) -> None:
        # The search's; 2 when it was quit before its answer.
        environment.process_exit_code = search.exit_code if search.exit_code is not None else CONFIGURATION_ERROR

    environment.events.quitting.add_listener(exit_code)


def _judge(environment: Environment, runner: Runner, settings: Settings, history: History | None,
           web_ui: Any) -> Judge:
    """Where the verdict is made: the servers reached (or started) and the schema claimed, before
    any load; with the web UI, its toolclash tab, report section and start form checks."""
    plan = probe_plan()
    services, coordinator = _reach_servers(settings, kept=plan is not None and plan.kept)
    master = isinstance(runner, MasterRunner)
    users = settings.most_agents(environment.parsed_options.num_users or 0)
    if users:  # known before any load in a headless run; a web-UI ramp is checked when it starts
        too_many = coordinator.connections_refused(users, environment.parsed_options.expect_workers if master else 1)
        if too_many:
            _stop_quietly(coordinator, services)
            _fail_configuration(too_many)
    judge = (Master if master else Local)(environment, settings, history, services, coordinator)
    coordinator.attach(runner)
    _name_the_servers(environment, services)
    if web_ui is not None:
        # Before the judge listens to test_start: the tab counts a ramp as soon as it starts,
        # while the judge's start may still wait (for the workers' check).
        Panel(judge, environment, settings, web_ui)
        install_on_web_ui(web_ui, judge.html_section)
        check_start_form(environment, web_ui, judge.settings_for_test)
    if plan is not None:  # this run is one probe of a capacity search, whatever shape its options name
        environment.shape_class = ProbeShape(plan, judge, runner)
    elif settings.shape_stages:
        shape = AgentStages(settings.shape_stages, settings.shape_hold_s,
                            environment.parsed_options.spawn_rate or max(settings.shape_stages), judge.on_stage)
        shape.runner = runner
        environment.shape_class = shape
    return judge


def _publish_metrics(judge: Judge, environment: Environment, port: int | None, web_ui: Any) -> None:
    """/metrics for Prometheus (harness.export.prometheus) on the web UI's port and on --metrics-port,
    and the OTLP push the environment asks for (harness.export.otlp); after the judge's own
    listeners, so a headless run's verdict line is printed before it lingers and pushes."""
    endpoint = MetricsEndpoint(judge.judged, lambda: judge.report)
    try:
        if otlp_wanted():  # before the linger's listener: the last push does not wait for it
            OtlpPush(judge.judged).start(environment)
        # A capacity probe's run does not wait for a scrape after its verdict: the search would
        # wait up to a minute a probe, and its next probe serves on the same port.
        serve_metrics(endpoint, environment, port, web_ui, linger=judge.probe_ending is None)
    except OtlpRefused as exc:
        _stop_quietly(judge.coordinator, judge.services)
        _fail_configuration(str(exc))
    except OSError as exc:
        _stop_quietly(judge.coordinator, judge.services)
        _fail_configuration(f"--metrics-port {port}: cannot listen there: {exc.strerror or exc}")


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
    if services.mcp is not None:
        servers += f" over MCP: {_mcp_server_named(services.mcp.target)}"
    for user_class in environment.user_classes:
        if not user_class.host:
            user_class.host = servers


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


def _reach_servers(settings: Settings, *, kept: bool = False) -> tuple[Services, Coordinator]:
    """`kept`: a capacity probe on the data the search's earlier probes left."""
    services = Services(settings.pg_dsn, settings.redis_url, settings.mcp)
    coordinator = None
    try:
        services.start()
        coordinator = Coordinator(settings, services.pg_dsn, services.redis_url, services.infos, kept=kept)
        coordinator.open()
    except (ServiceUnreachable, SchemaRefused) as exc:
        _stop_quietly(coordinator, services)
        _fail_configuration(str(exc))
    except psycopg.Error as exc:
        _stop_quietly(coordinator, services)
        _fail_configuration(f"while preparing schema {settings.schema!r}: {type(exc).__name__}: {exc}".splitlines()[0])
    for info in services.infos:
        log.info("toolclash uses %s", info.describe())
    if settings.mcp is not None:
        log.info("toolclash's agents call their tools over MCP on %s", _mcp_server_named(settings.mcp))
    return services, coordinator


def _mcp_server_named(target: McpTarget) -> str:
    """The MCP server as messages name it: passwords, tokens and query values never shown."""
    if target.started_by_toolclash:
        return f"the {target.server} tool server toolclash starts for each test (--mcp-server)"
    return f"{redacted_url(target.url)} (--mcp-url)"


def _stop_quietly(coordinator: Coordinator | None, services: Services) -> None:
    if coordinator is not None:
        coordinator.close()
    services.stop()
