"""--capacity: the most agents the platform serves with every SLA rule and every audit holding.

A probe runs one of two ways, a class each: as a whole `locust` run of its own (ChildRunProbes,
here), or, on a headless master whose workers connect from elsewhere, as one Locust test of that
master (harness.run.master_probes.TestProbes). As a child run, a probe has the user's options
but for those the search sets: its agents (--users, --spawn-rate: the user's, or all at once),
fresh data (--reset: the schema re-created and seeded; with --capacity-data kept, the first
probe's alone: the later ones run on the data it and they left, judged by the identity checks
scoped to their own calls, harness.verdict.coordinator), and its plan in its environment
(harness.capacity.plan: warm-up, steps, sliding window, minimum duration and calls), which the run
follows as its load shape (harness.run.probe_shape) and reports in its `probe` section. So a probe
runs as any run does: with --processes on its own workers, over MCP on its own tool server, audited
whole. Either way the search (harness.capacity.search) chooses the agents; each probe is judged from its
report (harness.capacity.judged); the answer goes to the console, --report-json, --junit-xml and
the exit code; without --headless, to the web UI's address (harness.web.capacity_view), which
shows the search and starts no test.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Protocol

from harness.capacity.answer import capacity_section, exit_code_of
from harness.capacity.judged import judge_probe
from harness.capacity.plan import PROBE_VARIABLE, ProbePlan, min_calls
from harness.capacity.search import Answer, bounds, search
from harness.config.declared import OPTIONS
from harness.config.settings import Settings
from harness.output.capacity import format_capacity, probe_line
from harness.output.html.capacity_page import write_capacity_page
from harness.output.junit import write_capacity_junit
from harness.output.summary import write_json
from harness.report_shape import REPORT_VERSION, Capacity, CapacityProbe, Report
from harness.run.child_runs import child_arguments, run_child

__all__ = ["CapacitySearch", "ChildRunProbes", "Probes"]

# The options the search sets itself in each probe's run (True: with a value); the user's are dropped.
_OWN_OPTIONS = {
    "--capacity": False, "--capacity-precision": True, "--capacity-hold": True, "--capacity-warmup": True,
    "--capacity-repeats": True, "--capacity-data": True, "--expect-capacity": True, "--report-json": True,
    "--junit-xml": True, "--history": True, "--reset": False, "--html": True, "-u": True, "--users": True, "-r": True,
    "--spawn-rate": True, "-t": True, "--run-time": True, "--master-bind-port": True, "--master-port": True,
    "--headless": False,
}


# The search's own options given by variable are not a probe's either (--expect-capacity without
# --capacity would refuse its run).
_OWN_VARIABLES = frozenset(option.env_var for option in OPTIONS if option.flag in _OWN_OPTIONS)


class _NoVerdict(Exception):
    """A probe's run ended without a report (it could not start, reach its servers...)."""


class Probes(Protocol):
    """A way of running the search's probes."""

    def run(self, plan: ProbePlan, number: int) -> tuple[Report | None, str]:
        """Probe `number` (1, 2, …) run to its plan: its run's report (with its `probe` section), or
        None and why it gave none (one line). Ctrl-C: a child run is stopped and audited, then
        KeyboardInterrupt is raised; a master's test is stopped and audited by Locust's own stop,
        which ends the search's greenlet (harness.run.master_probes.SearchOnMaster)."""
        ...


class CapacitySearch:
    """One search, as it goes: the probes so far (`probes`), then its answer (`capacity`,
    `exit_code`); the web UI's view reads them (harness.web.capacity_view)."""

    def __init__(self, settings: Settings, probes: Probes, html_file: str | None) -> None:
        """`probes`: how each probe runs; `html_file`: Locust's --html, a page of the search's own."""
        assert settings.capacity is not None
        self.options = settings.capacity
        self.settings = settings
        self.runs = probes
        self.html_file = html_file
        self.calls = min_calls([wt.weight for scenario in settings.scenarios for wt in scenario.tools(settings.params)])
        self.probes: list[CapacityProbe] = []
        self.capacity: Capacity | None = None
        self.exit_code: int | None = None
        self._began = time.monotonic()

    def run(self) -> int:
        """Search; print each probe and the answer; write the report, the JUnit file and the HTML
        page. The exit code: answer.exit_code_of, or 2 when a probe's run gave no verdict."""
        options = self.options
        self._began = time.monotonic()
        print(f"toolclash: capacity: searching from {options.start} agents, precision {options.precision},"
              f" {options.repeats} of {options.repeats} at the boundary, within {options.budget_s:g} s; each probe"
              f" {options.warmup_s:g} s of warm-up, then at least {options.hold_s:g} s and {self.calls} calls",
              flush=True)
        try:
            answer = search(self._probe, start=options.start, precision=options.precision, repeats=options.repeats,
                            budget_s=options.budget_s, probe_s=options.probe_s)
        except _NoVerdict as exc:
            print(f"toolclash: error: {exc}", file=sys.stderr, flush=True)
            self.exit_code = 2
            return 2
        except KeyboardInterrupt:  # the probe under way was stopped and audited
            return self.interrupted()
        capacity = capacity_section(answer, self.probes, options, time.monotonic() - self._began,
                                    _data(self.settings))
        exit_code = exit_code_of(capacity)
        print(format_capacity(capacity), flush=True)
        print(f"toolclash capacity verdict: {'PASS' if exit_code == 0 else 'FAIL'} (exit code {exit_code})",
              flush=True)
        if self.settings.report_json:
            write_json({"report_version": REPORT_VERSION, "capacity": capacity, "exit_code": exit_code},
                       self.settings.report_json)
        if self.settings.junit_xml:
            write_capacity_junit(capacity, self.settings.junit_xml)
        if self.html_file:
            write_capacity_page(capacity, exit_code, self.html_file)
        self.capacity, self.exit_code = capacity, exit_code
        return exit_code

    def interrupted(self) -> int:
        """Ctrl-C: the probes so far, no answer; the exit code (2)."""
        print(format_capacity(self.so_far()), flush=True)
        print("toolclash: capacity: interrupted: no answer (exit code 2)", file=sys.stderr, flush=True)
        self.exit_code = 2
        return 2

    def so_far(self) -> Capacity:
        """The answer the probes so far give, while the search goes on."""
        outcomes: dict[int, list[bool]] = {}
        for probe in self.probes:
            outcomes.setdefault(probe["agents"], []).append(probe["passed"])
        low, high = bounds(outcomes)
        answer = Answer(low, high, self.options.precision.at(low), False, False, outcomes)
        capacity = capacity_section(answer, self.probes, self.options, time.monotonic() - self._began,
                                    _data(self.settings))
        capacity["answer"] = (f"under way, {len(self.probes)} probes so far: {capacity['answer']}" if self.probes
                              else f"under way: the first probe, at {self.options.start} agents, runs")
        return capacity

    def _probe(self, agents: int) -> bool:
        # On kept data, the first probe's run seeds the one data set the others run on.
        kept = self.options.kept and bool(self.probes)
        plan = ProbePlan.for_hold(agents, self.options.spawn_rate or agents, self.options.warmup_s,
                                  self.options.hold_s, self.calls, kept)
        started = time.monotonic()
        report, reason = self.runs.run(plan, len(self.probes) + 1)
        if report is None:
            raise _NoVerdict(f"the probe at {agents} agents gave no verdict: {reason}")
        self.probes.append(judge_probe(report, started - self._began, time.monotonic() - started))
        print(probe_line(len(self.probes), self.probes[-1]), flush=True)
        return self.probes[-1]["passed"]


class ChildRunProbes:
    """Each probe a whole `locust` run of its own (harness.run.child_runs): the user's command
    line but for the options the search sets, its plan in its environment."""

    def __init__(self, argv: list[str], settings: Settings, processes: bool) -> None:
        """`processes`: the probes run with --processes (their workers connect to them on a port
        of their own)."""
        self.settings = settings
        self.processes = processes
        self.arguments, self.variables = child_arguments(argv, _OWN_OPTIONS)

    def run(self, plan: ProbePlan, number: int) -> tuple[Report | None, str]:
        # Headless even when the search shows in the web UI: a probe is a run to its end.
        own = ["--headless", "--users", str(plan.agents), "--spawn-rate", f"{plan.spawn_rate:g}",
               *([] if plan.kept else ["--reset"])]
        if self.settings.history:
            own += ["--history", f"{self.settings.history}.probe-{number}"]
        if self.processes:  # this process, the master --processes made, holds Locust's port: each probe its own
            port = _free_port()
            own += ["--master-bind-port", str(port), "--master-port", str(port)]
        done = run_child([*self.arguments, *own], {**self.variables, PROBE_VARIABLE: plan.to_text()}, _OWN_VARIABLES)
        return done.report, done.reason


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
        return port


def _data(settings: Settings) -> str:
    """How each probe's data was made fresh, or kept, as the report says it."""
    assert settings.capacity is not None
    if settings.capacity.kept:
        return (f"kept (--capacity-data kept): the first probe's run re-created schema {settings.schema} and its"
                " Redis keys (--reset) and seeded them; each later probe ran on the data the earlier ones left,"
                " nothing emptied, seeded or set up, its audits judged by the identities of its own calls alone"
                " (scoped_checks), the checks that need the data's state before it not judged (not_judged)")
    fresh = f"each probe's run re-created schema {settings.schema} and its Redis keys (--reset) and seeded them"
    if settings.mcp is not None and not settings.mcp.started_by_toolclash:
        return (fresh + "; your MCP server writes there, and whatever state it keeps elsewhere is not reset, while"
                " each probe's audits judge its run as if it had started it: --capacity-data kept judges each"
                " probe by its own calls' identities alone")
    return fresh

