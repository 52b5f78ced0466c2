"""The judging side of a run, in the process where the verdict is made (the local runner,
harness.run.local, or the master, harness.run.master): its servers and coordinator, each test's
settings, seed and run id, the audit once the load has stopped, and what it is written to (the
report, the verdict line, toolclash's section of the HTML report). The web UI's tab reads it
through harness.web.panel.Judging."""

from __future__ import annotations

import os
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import gevent
import psycopg
import redis
from locust.env import Environment

from harness.config.option import BadOption
from harness.export.figures import Judged
from harness.output.html.locust_report import add_to_html_report, section_for_test
from harness.output.summary import publish
from harness.run.mcp_server import McpServerRefused
from harness.run.role import Role

if TYPE_CHECKING:  # what the judge is handed or hands on, named in its annotations only
    from collections.abc import Callable

    from harness.config.settings import Settings
    from harness.output.history import History
    from harness.report_shape import Report
    from harness.run.services import Services
    from harness.verdict.coordinator import Coordinator
    from harness.verdict.probe import ProbeEnding
    from harness.verdict.report import StageStart
    from harness.verdict.transport import McpFacts
    from harness.watch.metrics import Metrics

__all__ = ["Judge"]


class Judge(Role):
    """What a local runner and a master share: everything but where the agents run."""

    def __init__(self, environment: Environment, settings: Settings, history: History | None, services: Services,
                 coordinator: Coordinator) -> None:
        super().__init__(environment, settings, history)
        self.services = services
        self.coordinator = coordinator
        self.report: Report | None = None
        self.verdicts: list[str] = []  # each audited test's verdict, in order
        self.audit_error: str | None = None  # why the current test could not be audited
        self._peak_agents = 0
        self._stages: list[StageStart] = []
        # The test's run id and seed: chosen here, told to the workers.
        self._run_id = ""
        self._seed = 0
        # Over MCP, the current test's tool server (its URL, what its probe found).
        self.mcp: McpFacts | None = None
        # When this run is a capacity probe, how it ended: its load shape's (harness.run.probe_shape),
        # given a callable so that the shape, which reads this judge's figures, stays above it.
        self.probe_ending: Callable[[float], ProbeEnding] | None = None
        # Where each audited test's report goes instead of the console and --report-json/--junit-xml:
        # a capacity search whose probes are this master's tests (harness.run.master_probes), which
        # reports the search, not its probes.
        self.report_to: Callable[[Report], None] | None = None

    def listen(self) -> None:
        super().listen()
        events = self.environment.events
        events.spawning_complete.add_listener(self.on_spawning_complete)
        events.quit.add_listener(self.on_quit)

    # -- where the agents run: here, or on the workers --------------------------------------

    @abstractmethod
    def live_metrics(self) -> Metrics:
        """What the agents recorded in the current (or last) test so far."""

    def _check(self, settings: Settings) -> list[str]:
        """What refuses a test with these settings before any load, one line each: nothing here
        (a master asks its workers)."""
        return []

    @abstractmethod
    def _start_agents(self, agents: int) -> None:
        """The test begun (seed and run id chosen): start the load, or have the workers start it."""

    @abstractmethod
    def _stop_load(self, environment: Environment) -> dict[str, Any]:
        """The test stopped: stop the load (or wait for the workers' final figures); the
        coordinator's `finish` arguments that come from the load: metrics, hub lags, and on a
        master the heartbeats and the workers' shipments."""

    # -- a test -----------------------------------------------------------------------------

    def server_samples(self) -> list[dict[str, Any]]:
        return self.coordinator.samples

    def judged(self) -> Judged:
        """The figures monitoring reads now (harness.export): the current test's, and the last verdict."""
        samples = self.server_samples()
        return Judged(run_id=self._run_id, metrics=self.live_metrics(), agents=self.environment.runner.user_count,
                      over_mcp=self.settings.mcp is not None, server_sample=samples[-1] if samples else None,
                      faults=self.coordinator.faults_injected, report=self.report)

    def _use(self, settings: Settings) -> None:
        super()._use(settings)
        self.coordinator.use(settings)

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.audit_error = None
        self.hub_probe.start()
        agents = environment.runner.target_user_count or 0
        self._peak_agents = agents
        refusals = self._prepare_test(environment) or self._start_mcp_server(agents)
        if refusals:
            return self._refuse_test(refusals)
        self._seed = self.settings.seed_for_test()
        server = self.services.mcp
        self._run_id = self.coordinator.begin(
            agents, lambda: environment.runner.user_count, self._seed,
            server.kill_and_restart if server is not None and server.target.started_by_toolclash else None)
        if self.history is not None:
            self.history.run_started(self._run_id, self._seed)
        self._start_agents(agents)

    def _prepare_test(self, environment: Environment) -> list[str]:
        """Before any load: this test's settings, and what else may refuse it (`_check`); what
        refuses the test, one line each."""
        try:
            settings = self.settings_for_test(environment.parsed_options)
        except BadOption as exc:
            return [str(exc)]
        refusals = self._check(settings)
        if refusals:
            return refusals
        self._use(settings)
        return []

    def _start_mcp_server(self, agents: int) -> list[str]:
        """Over MCP, the test's tool server started (when toolclash runs it) and probed, before
        any load; what refuses the test, one line."""
        self.mcp = None
        if self.services.mcp is None:
            return []
        try:
            self.mcp = self.services.mcp.start(self.settings, self.settings.most_agents(agents))
        except McpServerRefused as exc:
            return [str(exc)]
        return []

    def _refuse_test(self, lines: list[str]) -> None:
        """The test cannot run as asked: say why, end it before any load, exit code 2."""
        self._stop_mcp_server()
        headless = self.environment.parsed_options.headless
        for line in lines:
            self._configuration_error(line, in_log=not headless)  # without a console, the web UI's log
        self._end_test_early()

    def _end_test_early(self) -> None:
        """A load process could not start: end the run now (it is judged on what it has), rather
        than let agents without a pool run out the clock."""
        runner = self.environment.runner
        gevent.spawn(runner.quit if self.environment.parsed_options.headless else runner.stop)

    def on_stage(self, index: int, agents: int) -> None:
        """The load shape entered a stage: count calls by stage from now on."""
        if index == 0:
            self._stages = []
        self._stages.append({"stage": index, "agents": agents, "started": time.monotonic()})

    def stage_started(self, index: int) -> float | None:
        """When the load shape entered stage `index` (time.monotonic()), if it did."""
        return next((stage["started"] for stage in self._stages if stage["stage"] == index), None)

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        self._peak_agents = max(self._peak_agents, user_count)

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        load_stopped = time.monotonic()
        self.hub_probe.stop()  # the load is over: the audit's pace is not the run's
        if not self.coordinator.running:
            self._stop_mcp_server()
            return  # refused before it began: no load ran
        from_load = self._stop_load(environment)
        self._stop_mcp_server()  # its calls under way end first: none commits after the audits read
        try:
            self.report = self.coordinator.finish(
                peak_agents=self._peak_agents, stages=self._stages, mcp=self.mcp,
                probe=self.probe_ending(load_stopped) if self.probe_ending is not None else None, **from_load)
        except (psycopg.Error, redis.RedisError) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.audit_error = reason
            self._configuration_error(f"could not audit the run: {reason}")
            return
        self.exit_code = max(self.exit_code or 0, self.report["exit_code"])
        self.verdicts.append(self.report["verdict"])
        if self.report_to is not None:
            self.report_to(self.report)
        else:
            publish(self.report, self.settings.report_json, self.settings.junit_xml)

    def _stop_mcp_server(self) -> None:
        if self.services.mcp is not None:
            self.services.mcp.stop()

    # -- the end ----------------------------------------------------------------------------

    def _release(self) -> None:
        self.coordinator.close()
        self.services.stop()

    def html_section(self) -> str:
        """toolclash's section of Locust's HTML report, for the test Locust's figures are about:
        the last one started."""
        return section_for_test(self.report, self._run_id, self.audit_error)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        # Locust has written its HTML report by now (with --html; its name's {u}/{r}/{t} filled in).
        html_file = getattr(self.environment.parsed_options, "html_file", None)
        if html_file and os.path.exists(html_file):
            add_to_html_report(html_file, self.html_section())
        if self.report is not None and self.report_to is None:
            verdict, ramps = self.report["verdict"].upper(), ""
            if len(self.verdicts) > 1:  # web-UI ramps: the exit code is the worst one's
                verdict = "FAIL" if "fail" in self.verdicts else verdict
                ramps = f", the worst of {len(self.verdicts)} ramps: {', '.join(v.upper() for v in self.verdicts)}"
            print(f"toolclash verdict: {verdict} (exit code {exit_code}{ramps})", flush=True)
