"""The load side of a process that runs agents (the local runner, or a worker): its link to the
tools (harness.run.links: in process, or over MCP), and the metrics its calls are recorded into;
the agents find it with `load_of` (they need nothing else of the process's role)."""

from __future__ import annotations

import itertools
import logging
import random
import time
import weakref
from bisect import bisect
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
from locust.env import Environment
from locust.event import EventHook

from db.tool import Tool
from harness.config.settings import Settings
from harness.run.links import DRAIN_TIMEOUT_S, InProcessLink, Link, McpLink
from harness.run.locust_requests import told_to
from harness.run.memory import Memory
from harness.run.planners import ModelPlanner, Planner, TracePlanner
from harness.watch.metrics import Metrics
from harness.watch.turn_stats import TurnFigures
from transport.call_record import Outcome
from transport.in_process import ToolAdapter
from transport.mcp.adapter import McpToolAdapter

if TYPE_CHECKING:
    from harness.output.history import History

__all__ = ["Load", "Toolbox", "load_of", "new_load"]

log = logging.getLogger(__name__)

_POOL_SAMPLE_INTERVAL_S = 1.0


_LOADS: weakref.WeakKeyDictionary[Environment, Load] = weakref.WeakKeyDictionary()


def new_load(environment: Environment, settings: Settings, process_index: int, history: History | None) -> Load:
    """The load of the agents Locust runs in this process (`load_of` finds it): Locust is told of
    each call, the --history file too, and the metrics count the agents' own errors."""
    load = Load(settings, environment.events.request, process_index)
    load.agents_now = lambda: environment.runner.user_count
    environment.events.user_error.add_listener(load.on_agent_error)
    if history is not None:
        load.call_started.add_listener(history.invoked)
        load.call_finished.add_listener(history.completed)
    _LOADS[environment] = load
    return load


def load_of(environment: Environment) -> Load:
    """The load the agents of `environment` run on."""
    return _LOADS[environment]


class Toolbox:
    """The tools of the selected scenarios, picked by weight."""

    def __init__(self, settings: Settings) -> None:
        weighted = [wt for scenario in settings.scenarios for wt in scenario.tools(settings.params)]
        self.tools = [wt.tool for wt in weighted]
        self.by_name = {tool.name: tool for tool in self.tools}
        self.workflows = tuple(workflow for scenario in settings.scenarios for workflow in scenario.workflows)
        self._cumulative = list(itertools.accumulate(wt.weight for wt in weighted))
        self._total = float(self._cumulative[-1]) if self._cumulative else 0.0

    def pick(self, rng: random.Random) -> Tool:
        # What rng.choices(self.tools, cum_weights=self._cumulative)[0] computes (one random()
        # drawn, so the same seed picks the same tools), without its checks and list on every call.
        return self.tools[bisect(self._cumulative, rng.random() * self._total, 0, len(self.tools) - 1)]


class Load:
    def __init__(self, settings: Settings, request_event: EventHook, process_index: int):
        self.settings = settings
        # Known at once in a local run; a worker learns them from the master at each test start.
        self.pg_dsn: str | None = None
        self.redis_url: str | None = None
        # The MCP server's URL, over MCP: the judging side's, or the master's, at each test start.
        self.mcp_url: str | None = None
        self.toolbox = Toolbox(settings)
        self.metrics = Metrics()
        # The project's own hooks, which the adapter fires (transport.hooks): each call's CallRecord as it
        # starts (before its first attempt), and once it has finished, with every retry and its
        # cause. Locust's EventHook, so that a listener's exception is handled as Locust handles
        # any other's. Locust is told of each call first (its `request` event), then the metrics.
        self.call_started = EventHook()
        self.call_finished = EventHook()
        self.call_finished.add_listener(told_to(request_event))
        self.call_finished.add_listener(self._record)
        # The load shape's current stage (None without --shape): calls are also counted per stage.
        self.stage: int | None = None
        # This test's link to the tools; None before the first test, after each, or when it could not open.
        self._link: Link | None = None
        self._agent_numbers = itertools.count(1)
        self._trace_agents = itertools.count(0)
        self._seed = 0
        self._process_index = process_index
        self._sampler: gevent.Greenlet | None = None
        self._started = 0.0
        # This process's running totals since its test started: unlike `metrics`, never taken
        # by a shipment (the charts' rates are their differences from one second to the next).
        self._totals = dict.fromkeys(("calls", "attempts", "conflicts"), 0)
        # How many agents run in this process now (Locust's runner tells: set by new_load).
        self.agents_now: Callable[[], int] = lambda: 0

    def use(self, settings: Settings) -> None:
        """The settings of the next test (its per-run options may differ from the last one's)."""
        self.settings = settings
        self.toolbox = Toolbox(settings)

    @property
    def adapter(self) -> ToolAdapter | McpToolAdapter | None:
        """What the agents call their tools through; None while no link is open."""
        return self._link.adapter if self._link is not None else None

    def _record(self, record) -> None:
        waits = self._link.waits if self._link is not None else InProcessLink.waits
        self.metrics.record(record, waits)
        self._totals["attempts"] += record.attempts
        if record.failures:  # most calls have none
            self._totals["conflicts"] += sum(failure.counted_as_conflict for failure in record.failures)
        if record.outcome is not Outcome.INTERRUPTED:
            self._totals["calls"] += 1
        if self.stage is not None:
            self.metrics.stage(self.stage).record(record, waits)

    def record_turn(self, turn: TurnFigures) -> None:
        """An agent's finished turn, into the metrics (and its stage's, with a load shape)."""
        self.metrics.record_turn(turn)
        if self.stage is not None:
            self.metrics.stage(self.stage).record_turn(turn)

    def on_agent_error(self, exception: BaseException, **_: Any) -> None:
        """Locust's `user_error`: an agent's task raised instead of finishing its call."""
        self.metrics.record_agent_error(exception)

    def take_metrics(self) -> Metrics:
        """What was recorded since the last take (a worker ships it to the master)."""
        taken, self.metrics = self.metrics, Metrics()
        return taken

    def next_agent(self) -> tuple[str, random.Random]:
        """A new agent's id, numbered in spawn order on this process from 1 at each test start,
        and its random source: agents of the same id draw the same tools and arguments in every
        test of the same seed."""
        agent_id = f"p{self._process_index}-a{next(self._agent_numbers)}"
        # A str seed is hashed with SHA-512, the same in every process (unlike hash()).
        return agent_id, random.Random(f"{self._seed}:{agent_id}")

    def memory(self) -> Memory | None:
        """A new agent's memory of its reads, for its workflows' writes (--writes: blind or
        guarded); None when no selected scenario has a workflow."""
        if not self.toolbox.workflows:
            return None
        return Memory(self.toolbox.workflows, self.toolbox.by_name, self.settings.writes == "guarded")

    def think_times(self, agent_id: str) -> Callable[[], float]:
        """The agent's think times (--think-time), in seconds, each drawn when asked for from a
        random source of their own, seeded from the test's seed and the agent's id: the same seed
        gives the same think times, and drawing them moves nothing of what the agent's tools and
        arguments are drawn from (`next_agent`)."""
        return partial(self.settings.think_time.sample, random.Random(f"{self._seed}:{agent_id}:think"))

    def planner(self, agent_id: str, rng: random.Random) -> Planner:
        """What the agent asks for its turns: the turn model's draws from `rng` (next_agent's), or
        with --trace the next of this process's block of the trace's agents (harness.run.planners)."""
        trace = self.settings.trace
        if trace is None:
            return ModelPlanner(self.settings, rng, self.toolbox.pick, self.think_times(agent_id), self.memory())
        _, turns = trace.agents[next(self._trace_agents) % len(trace.agents)]
        return TracePlanner(turns, rng)

    def start(self, agents: int, seed: int) -> dict | None:
        """Open the pool (all its connections ready before the first call) and a fresh Metrics,
        and number the agents from 1 again; None, or what kept the load from starting (also kept
        in the metrics, for the verdict)."""
        self.metrics = Metrics()
        self._totals = dict.fromkeys(self._totals, 0)
        self._seed = seed
        self._agent_numbers = itertools.count(1)
        # This process's agents take the trace's agents from its own block on: `agents` each.
        self._trace_agents = itertools.count(self._process_index * agents)
        link = self._new_link()
        failure = link.open(agents)
        if failure is not None:
            log.error("toolclash: %s", failure["detail"])
            self.metrics.load_failures.append(failure)
            return failure
        self._link = link
        self._started = time.monotonic()
        self._sampler = gevent.spawn(self._sample_pool)
        return None

    def _new_link(self) -> Link:
        hooks = self.call_finished, self.call_started
        if self.settings.mcp is not None:
            return McpLink(self.settings, self._process_index, self.mcp_url, *hooks)
        return InProcessLink(self.settings, self._process_index, self.pg_dsn, self.redis_url, *hooks)

    def open_agent(self, agent_id: str) -> None:
        """An agent started (over MCP, its session is opened now)."""
        if self._link is not None:
            self._link.open_agent(agent_id)

    def close_agent(self, agent_id: str) -> None:
        """An agent stopped (over MCP, its session is closed: DELETE)."""
        if self._link is not None:
            self._link.close_agent(agent_id)

    def _sample_pool(self) -> None:
        """The pool's own view, every second: connections, free ones, requests waiting (none over
        MCP: the pool is the tool server's); and the running totals of the calls, for the web
        UI's charts."""
        while True:
            t = round(time.monotonic() - self._started, 3)
            pool = self._link.pool_sample()
            if pool is not None:
                self.metrics.pool_samples.append({"t": t, "process": self._process_index, **pool})
            waiting = pool["waiting"] if pool is not None else None
            self.metrics.load_samples.append({"t": t, "process": self._process_index, **self._totals,
                                              "agents": self.agents_now(), "pool_waiting": waiting})
            gevent.sleep(_POOL_SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        """Let calls still in flight finish recording, then close every connection."""
        link = self._link
        if link is None:
            return
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while link.adapter.calls_in_flight and time.monotonic() < deadline:
            gevent.sleep(0.01)
        # Their agents were not seen to end them: each may yet commit, so each is indeterminate.
        abandoned = link.adapter.abandon_calls_in_flight()
        if abandoned:
            log.warning("%d tool calls still in flight after %.0f s: reported indeterminate", len(abandoned),
                        DRAIN_TIMEOUT_S)
        self._sampler.kill()
        link.close(self.metrics, abandoned)
        self._link = None
