"""toolclash's options (harness.config.declared) validated into one immutable `Settings`."""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.durations import Duration
from db.pool import ISOLATION_LEVELS
from db.redis_keys import RedisKeys
from harness.config.capacity import CapacityOptions, capacity_options
from harness.config.declared import DEFAULT_POOL_SIZE, OPTIONS, RUN_OPTIONS
from harness.config.mcp import McpTarget, mcp_target
from harness.config.option import BadOption
from harness.config.shapes import SHAPES
from harness.config.sla import DEFAULT_SLA_FILE, BadSlaFile, Rule, load_rules
from harness.config.trace import Trace, load_trace, refuse_turn_model_options
from harness.config.turns import CallsPerTurn, calls_per_turn, same_key
from harness.faults.chaos import BadChaos, Fault, parse_chaos
from history_check.models import UnknownModel, anomalies_prohibited_by
from tasks.scenarios import Scenario, ScenarioParams, UnknownScenario, select
from tasks.user_tools import BadToolsModule, load_tools_module
from transport.retry import RetryPolicy

__all__ = ["HARNESS_SESSIONS", "Settings", "file_digest"]

INITIAL_BALANCE = 1_000_000
# The harness's sessions besides the coordinator's (which is open when the budget is checked):
# the server sampler's, the drain's (harness/verdict/drainer.py) and the fault injector's.
HARNESS_SESSIONS = 3


def _typed_run_options(options: Any) -> argparse.Namespace:
    """A copy of Locust's parsed options with the per-run ones typed (see Option.typed);
    raises BadOption naming the option and the value."""
    typed = {o.dest: o.typed(getattr(options, o.dest, o.default)) for o in RUN_OPTIONS}
    return argparse.Namespace(**{**vars(options), **typed})


# A random seed below this: short enough to type into --seed.
_RANDOM_SEEDS = 2**32
_HIGHEST_PORT = 65535

# Schemas every database has, shared with everything else in it.
_SHARED_SCHEMAS = {"public", "information_schema"}


def _schema_name(value: str) -> str:
    # 40, not PostgreSQL's 63: the load sessions' application_name carries it, and must not be cut.
    if not value or len(value) > 40 or value.startswith("pg_") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", value):
        raise BadOption(f"--schema {value!r}: give a plain identifier of at most 40 characters, not starting with pg_")
    if value.lower() in _SHARED_SCHEMAS:
        raise BadOption(f"--schema {value}: shared by everything in the database;"
                        " toolclash works in a schema of its own (default: toolclash)")
    return value


def _shape_stages(options: Any) -> tuple[int, ...] | None:
    if options.shape is None:
        if options.shape_agents:
            raise BadOption("--shape-agents needs --shape steps or --shape spike")
        return None
    if options.shape_hold <= 0:
        raise BadOption(f"--shape-hold {options.shape_hold}: must be more than 0 seconds")
    if not options.shape_agents:
        return SHAPES[options.shape]
    try:
        stages = tuple(int(part) for part in options.shape_agents.split(","))
    except ValueError:
        raise BadOption(f"--shape-agents {options.shape_agents!r}: give comma-separated whole numbers") from None
    if not stages or min(stages) < 1:
        raise BadOption(f"--shape-agents {options.shape_agents!r}: every stage needs at least one agent")
    return stages


def _required_levels(options: Any) -> tuple[str, ...]:
    if not options.require_levels:
        return ()
    levels = tuple(level.strip() for level in options.require_levels.split(","))
    if not set(levels) <= set(ISOLATION_LEVELS):
        raise BadOption(f"--require-levels {options.require_levels!r}: comma-separated, among"
                        f" {', '.join(ISOLATION_LEVELS)}")
    if not options.isolation_matrix:
        raise BadOption("--require-levels needs --isolation-matrix")
    return levels


def _consistency_model(named: str) -> str:
    """A model of Elle's that the list_append audit can judge: not one that forbids real-time
    anomalies, for the calls' times are each load process's own clock."""
    if not named:
        return ""
    try:
        forbidden = anomalies_prohibited_by(named)
    except UnknownModel as exc:
        raise BadOption(f"--consistency-model: {exc}") from None
    if any(anomaly.endswith("-realtime") for anomaly in forbidden):
        raise BadOption(f"--consistency-model {named!r} forbids real-time anomalies, which the run's audit cannot"
                        " order (each load process has its own clock): check the run's --history file with"
                        " python -m history_check instead")
    return named


def _scopes(scenarios: tuple[Scenario, ...], params: ScenarioParams) -> dict[str, list[str]]:
    """What an SLA rule's scope may name: each tool, and each scenario (its tools)."""
    scopes: dict[str, list[str]] = {}
    for scenario in scenarios:
        names = [wt.tool.name for wt in scenario.tools(params)]
        scopes[scenario.name] = names
        scopes.update({name: [name] for name in names})
    return scopes


@dataclass(frozen=True)
class Settings:
    pg_dsn: str | None
    redis_url: str | None
    schema: str
    reset: bool
    scenarios: tuple[Scenario, ...]
    params: ScenarioParams
    isolation: str
    pool_size: int | None
    pool_timeout_s: float
    retry: RetryPolicy
    deadlock_timeout_ms: int | None
    lock_timeout_ms: int
    tool_work: Duration  # each tx.work(), in process
    think_time: Duration  # each wait of an agent between two calls
    report_json: str | None
    isolation_matrix: bool = False
    required_levels: tuple[str, ...] = ()  # with isolation_matrix: the levels that must pass, besides the strongest
    capacity: CapacityOptions | None = None  # --capacity's search (harness.run.capacity)
    sla_rules: tuple[Rule, ...] = ()
    scopes: dict[str, list[str]] = field(default_factory=dict)  # tool and scenario names -> tools
    junit_xml: str | None = None
    sample_interval_s: float = 1.0
    shape_stages: tuple[int, ...] | None = None
    shape_hold_s: float = 12.0
    timeseries_csv: str | None = None
    chaos: tuple[Fault, ...] = ()
    history: str | None = None
    metrics_port: int | None = None  # /metrics for Prometheus (harness.export.prometheus)
    seed: int | None = None
    tools_module: str | None = None
    tools_digest: str | None = None  # the --tools-module file's SHA-256: every process must run the same code
    mcp: McpTarget | None = None  # the tools' MCP server; None: they run in the load's processes
    # An agent's turn: its calls, run at once, drawn by weight, and the chance that a later call
    # of it takes an earlier one's key (harness.run.turns).
    calls_per_turn: CallsPerTurn = CallsPerTurn(((1, 1),))
    same_key: float = 0.0
    # --trace: the turns the agents replay instead of the turn model's (harness.run.planners).
    trace: Trace | None = None
    # A workflow's write from its agent's read (harness.run.memory): "blind" or "guarded".
    writes: str = "guarded"
    # The load-shaping options (declared `summarized`) as given, typed, by dest: the settings
    # summary shows them so (harness.config.run_settings).
    as_given: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Any, *, judge: bool = True) -> Settings:
        """Validate Locust's parsed options; raises BadOption with a one-line reason. `judge`:
        this process makes the verdict (local runner or master), so the SLA file is read here; a
        worker never reads it (the path is the master's)."""
        options = _typed_run_options(options)
        if getattr(options, "num_users", None) is not None and options.num_users < 1:
            raise BadOption(f"--users {options.num_users}: at least one agent is needed")
        for option in OPTIONS:
            option.check_lowest(getattr(options, option.dest))
        if options.backoff_max < options.backoff_base:
            raise BadOption(f"--backoff-max {options.backoff_max} ms: must be at least {options.backoff_base} ms")
        if options.pool_timeout <= 0:
            raise BadOption(f"--pool-timeout {options.pool_timeout}: must be more than 0 seconds")
        shape_stages = _shape_stages(options)
        required_levels = _required_levels(options)
        if options.metrics_port is not None and options.metrics_port > _HIGHEST_PORT:
            raise BadOption(f"--metrics-port {options.metrics_port}: a port is at most {_HIGHEST_PORT}")
        if options.sample_interval <= 0:
            raise BadOption(f"--sample-interval {options.sample_interval}: must be more than 0 seconds")
        schema = _schema_name(options.schema)
        try:
            user_scenarios = (load_tools_module(options.tools_module),) if options.tools_module else ()
            tools_digest = file_digest(options.tools_module) if options.tools_module else None
            scenarios = tuple(select(options.scenario, options.isolation, user_scenarios))
        except BadToolsModule as exc:
            raise BadOption(str(exc)) from None
        except OSError as exc:
            raise BadOption(f"--tools-module {options.tools_module}: cannot read it: {exc.strerror or exc}") from None
        except UnknownScenario as exc:
            raise BadOption(f"--scenario: {exc}") from None
        params = ScenarioParams(
            accounts=options.accounts,
            keys=RedisKeys(schema),
            counters=options.counters,
            teams=options.teams,
            queue_capacity=options.queue_capacity,
            hold_s=options.hold_time / 1000.0,
            initial_balance=INITIAL_BALANCE,
            isolation=options.isolation,
            consistency_model=_consistency_model(options.consistency_model),
        )
        if not any(wt.weight > 0 for scenario in scenarios for wt in scenario.tools(params)):
            raise BadOption(f"--scenario {options.scenario!r}: the mix has no tool with a weight above 0")
        scopes = _scopes(scenarios, params)
        try:
            sla_rules = load_rules(Path(options.sla) if options.sla else DEFAULT_SLA_FILE, scopes) if judge else ()
        except BadSlaFile as exc:
            raise BadOption(str(exc)) from None
        try:
            chaos = parse_chaos(options.chaos, distributed=bool(options.processes or options.master or options.worker))
        except BadChaos as exc:
            raise BadOption(f"--chaos {options.chaos!r}: {exc}") from None
        mcp = mcp_target(options, scenarios, params, chaos)
        turn_calls = calls_per_turn(options.calls_per_turn)
        trace = load_trace(options.trace, scenarios, params) if options.trace else None
        if trace is not None:
            refuse_turn_model_options(options)
        return cls(
            pg_dsn=options.pg_dsn or None,
            redis_url=options.redis_url or None,
            schema=schema,
            reset=options.reset,
            scenarios=scenarios,
            params=params,
            isolation=options.isolation,
            pool_size=options.pool_size,
            pool_timeout_s=options.pool_timeout,
            retry=RetryPolicy(options.max_tries, options.backoff_base / 1000.0, options.backoff_max / 1000.0),
            deadlock_timeout_ms=options.deadlock_timeout,
            lock_timeout_ms=options.lock_timeout,
            tool_work=options.tool_work,
            think_time=options.think_time,
            report_json=options.report_json,
            isolation_matrix=options.isolation_matrix,
            required_levels=required_levels,
            capacity=capacity_options(options),
            sla_rules=sla_rules,
            scopes=scopes,
            junit_xml=options.junit_xml,
            sample_interval_s=options.sample_interval,
            shape_stages=shape_stages,
            shape_hold_s=options.shape_hold,
            timeseries_csv=options.timeseries_csv,
            chaos=chaos,
            history=options.history or None,
            metrics_port=options.metrics_port,
            seed=options.seed,
            tools_module=options.tools_module,
            tools_digest=tools_digest,
            mcp=mcp,
            calls_per_turn=turn_calls,
            same_key=same_key(options.same_key),
            trace=trace,
            writes=options.writes,
            as_given={o.dest: getattr(options, o.dest) for o in OPTIONS if o.summarized},
        )

    def seed_for_test(self) -> int:
        """The seed of one test: --seed's, or a new one (the report says which, to run it again)."""
        return self.seed if self.seed is not None else secrets.randbelow(_RANDOM_SEEDS)

    def most_agents(self, target: int) -> int:
        """The most agents a test started for `target` agents runs at once: with a load shape,
        its largest stage. The pool is sized for that when the test starts."""
        return max((target, *(self.shape_stages or ())))

    def calls_at_once(self, agents: int) -> int:
        """The most calls `agents` agents run at once: each its turn's, at most --calls-per-turn's
        most, or the trace's."""
        return agents * (self.trace.most_calls if self.trace is not None else self.calls_per_turn.most)

    def pool_size_for(self, agents: int) -> int:
        """The pool of one load process that runs `agents` agents: a connection per call they
        run at once, at most DEFAULT_POOL_SIZE."""
        if self.pool_size is not None:
            return self.pool_size
        size = self._one_per_call_at_once(agents)
        if any(s.name == "pool_exhaustion" for s in self.scenarios):
            return max(1, size // 2)  # fewer connections than agents: they must queue
        return size

    def tool_server_threads(self, agents: int) -> int:
        """The threads of the builtin MCP server for a test of `agents`: one per call they run at
        once, at most DEFAULT_POOL_SIZE, and never fewer than its connections (the pool:
        `pool_size_for` all the agents, which it serves alone), so that its threads queue for the
        pool as agents do in process."""
        return max(self.pool_size_for(agents), self._one_per_call_at_once(agents))

    def _one_per_call_at_once(self, agents: int) -> int:
        return min(max(1, self.calls_at_once(agents)), DEFAULT_POOL_SIZE)

    def connections_needed(self, agents: int, processes: int) -> tuple[int, int]:
        """(all the PostgreSQL sessions a run of `agents` on `processes` load processes opens,
        the pool of one process). Over MCP the load opens none: the builtin server has one pool
        for all the agents; a user's server is not counted (its sessions are its own)."""
        if self.mcp is not None:
            server = self.pool_size_for(agents) if self.mcp.started_by_toolclash else 0
            return server + HARNESS_SESSIONS, 0
        per_process = self.pool_size_for(math.ceil(agents / max(1, processes)))
        return per_process * processes + HARNESS_SESSIONS, per_process


def file_digest(path: str) -> str:
    """The SHA-256 of a file's bytes, hex; raises OSError."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
