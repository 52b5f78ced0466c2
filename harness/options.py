"""toolclash's command-line options (also environment variables and Locust config-file keys),
and their validation into one immutable `Settings`."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.pool import ISOLATION_LEVELS
from db.redis_keys import RedisKeys
from db.retry import RetryPolicy
from tasks.scenarios import Scenario, ScenarioParams, UnknownScenario, select
from harness.chaos import BadChaos, Fault, parse_chaos
from harness.shapes import SHAPES
from harness.sla import DEFAULT_SLA_FILE, BadSlaFile, Rule, load_rules
from tasks.user_tools import BadToolsModule, load_tools_module

__all__ = ["BadOption", "DEFAULT_POOL_SIZE", "HARNESS_SESSIONS", "Settings", "add_arguments"]

INITIAL_BALANCE = 1_000_000
# Agents share a bounded pool, as on an AI platform: more agents queue for it (that wait is
# measured) instead of asking the server for one connection each. 20 per process leaves room for
# 4 processes and the harness's own sessions on a stock server (max_connections 100).
DEFAULT_POOL_SIZE = 20
# The harness's sessions besides the coordinator's (which is open when the budget is checked):
# the server sampler's and the fault injector's.
HARNESS_SESSIONS = 2


class BadOption(ValueError):
    """An option's value makes no sense; the message names the option and the value."""


def add_arguments(parser: Any) -> None:
    """The `init_command_line_parser` listener."""
    group = parser.add_argument_group("toolclash", "the servers, the conflict scenarios and the verdict")
    # Added to a group, not with parser.add_argument: Locust then leaves them out of the web UI's
    # start form, rightly, since they are fixed when the process starts (servers reached, schema claimed).
    add = group.add_argument
    add("--pg-dsn", env_var="TOOLCLASH_PG_DSN", default=None,
        help="PostgreSQL to stress (libpq DSN or URI). Unset with --redis-url unset too: an embedded PostgreSQL is started")
    add("--redis-url", env_var="TOOLCLASH_REDIS_URL", default=None,
        help="Redis to stress (redis:// or unix:// URL). Unset: an embedded Redis is started")
    add("--schema", env_var="TOOLCLASH_SCHEMA", default="toolclash",
        help="the schema the harness works in; nothing outside it is touched (default: toolclash)")
    add("--reset", env_var="TOOLCLASH_RESET", action="store_true", default=False,
        help="drop and re-create the schema first, even if an interrupted run left data in it")
    add("--scenario", env_var="TOOLCLASH_SCENARIO", default="",
        help="comma-separated scenarios to run (default: the default mix, or the --tools-module's tools)")
    add("--tools-module", env_var="TOOLCLASH_TOOLS_MODULE", default=None,
        help="a Python file of your own tools (functions whose first parameter is tx), run as a scenario named after it")
    add("--isolation-matrix", env_var="TOOLCLASH_ISOLATION_MATRIX", action="store_true", default=False,
        help="run the scenarios once per isolation level and print the table to choose a level by")
    add("--accounts", env_var="TOOLCLASH_ACCOUNTS", type=int, default=200,
        help="credit accounts shared by the agents: fewer accounts, hotter rows (default: 200)")
    add("--counters", env_var="TOOLCLASH_COUNTERS", type=int, default=8,
        help="isolation: counters the agents increment (default: 8)")
    add("--queue-capacity", env_var="TOOLCLASH_QUEUE_CAPACITY", type=int, default=50,
        help="queue: jobs the bounded queue holds before it refuses more (default: 50)")
    add("--teams", env_var="TOOLCLASH_TEAMS", type=int, default=4,
        help="agent_state: teams sharing one plan each; fewer teams, more WATCH conflicts (default: 4)")
    add("--hold-time", env_var="TOOLCLASH_HOLD_TIME", type=float, default=50.0,
        help="pool_exhaustion: ms its tool keeps its connection, working inside its transaction (default: 50)")
    add("--isolation", env_var="TOOLCLASH_ISOLATION", default="read_committed", choices=sorted(ISOLATION_LEVELS),
        help="isolation level of every tool transaction (default: read_committed)")
    add("--pool-size", env_var="TOOLCLASH_POOL_SIZE", type=int, default=None,
        help=f"connections per load process (default: one per agent on that process, at most {DEFAULT_POOL_SIZE};"
             " half of that when pool_exhaustion runs)")
    add("--pool-timeout", env_var="TOOLCLASH_POOL_TIMEOUT", type=float, default=5.0,
        help="seconds a call waits for a connection before it fails as a pool timeout (default: 5)")
    add("--max-tries", env_var="TOOLCLASH_MAX_TRIES", type=int, default=5,
        help="attempts per call, retries included, for retryable failures (default: 5)")
    add("--backoff-base", env_var="TOOLCLASH_BACKOFF_BASE", type=float, default=10.0,
        help="ms: backoff ceiling after the first failure, doubled per retry, full jitter (default: 10)")
    add("--backoff-max", env_var="TOOLCLASH_BACKOFF_MAX", type=float, default=500.0,
        help="ms: the backoff ceiling never grows past this (default: 500)")
    add("--deadlock-timeout", env_var="TOOLCLASH_DEADLOCK_TIMEOUT", type=int, default=None,
        help="ms: PostgreSQL deadlock_timeout for the harness's sessions, when the role may set it"
             " (default: the server's value)")
    add("--lock-timeout", env_var="TOOLCLASH_LOCK_TIMEOUT", type=int, default=0,
        help="ms: PostgreSQL lock_timeout; a lock wait past it fails as lock_timeouts and is retried (default: 0, none)")
    add("--tool-work", env_var="TOOLCLASH_TOOL_WORK", type=float, default=5.0,
        help="ms of work a tool does between its statements while holding its locks (default: 5)")
    add("--think-time", env_var="TOOLCLASH_THINK_TIME", type=float, default=0.0,
        help="ms an agent waits between two tool calls (default: 0)")
    add("--sample-interval", env_var="TOOLCLASH_SAMPLE_INTERVAL", type=float, default=1.0,
        help="seconds between two samples of the servers (locks, counters, Redis INFO) during the run (default: 1)")
    add("--timeseries-csv", env_var="TOOLCLASH_TIMESERIES_CSV", default=None,
        help="write the servers' samples to this CSV file, one row per sample")
    add("--shape", env_var="TOOLCLASH_SHAPE", default=None, choices=("steps", "spike"),
        help="a load shape: agents in stages (steps: 10,20,30,40,50; spike: 10,60,10), per-stage figures in the report")
    add("--shape-agents", env_var="TOOLCLASH_SHAPE_AGENTS", default=None,
        help="the shape's stages as comma-separated agent counts, e.g. 20,40,80,160")
    add("--shape-hold", env_var="TOOLCLASH_SHAPE_HOLD", type=float, default=12.0,
        help="seconds each stage of the shape is held (default: 12)")
    add("--sla", env_var="TOOLCLASH_SLA", default=None,
        help="TOML file of SLA rules ([[rule]] metric, op, threshold, scope); default: sla/default.toml")
    add("--report-json", env_var="TOOLCLASH_REPORT_JSON", default=None,
        help="write the run's report as JSON to this path")
    add("--junit-xml", env_var="TOOLCLASH_JUNIT_XML", default=None,
        help="write one JUnit test case per SLA rule and per audit check to this path, for CI")
    add("--chaos", env_var="TOOLCLASH_CHAOS", default=None,
        help="faults injected on purpose, kind:every[:share] comma-separated: pg-kill (terminate the load's"
             " backends), redis-kill (kill the load's Redis clients), worker-stop (one worker dies; distributed"
             " runs), e.g. pg-kill:3s,redis-kill:5s:25%%; share default 50%%")
    add("--history", env_var="TOOLCLASH_HISTORY", default=None,
        help="write a JSON-lines history of the run to this path, one line per call's invocation and one per its"
             " completion (a worker writes PATH.worker-<index>)")
    add("--seed", env_var="TOOLCLASH_SEED", type=int, default=None,
        help="the same seed gives every agent the same tools and arguments, call after call (default: a random"
             " seed, in the report)")


# A random seed below this: short enough to type into --seed.
_RANDOM_SEEDS = 2**32

# Schemas every database has, shared with everything else in it.
_SHARED_SCHEMAS = {"public", "information_schema"}


def _schema_name(value: str) -> str:
    # 40, not PostgreSQL's 63: the load sessions' application_name carries it, and must not be cut.
    if not value or len(value) > 40 or value.startswith("pg_") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", value):
        raise BadOption(f"--schema {value!r}: give a plain identifier of at most 40 characters, not starting with pg_")
    if value.lower() in _SHARED_SCHEMAS:
        raise BadOption(f"--schema {value}: shared by everything in the database; toolclash works in a schema of its own"
                        " (default: toolclash)")
    return value


def _at_least(name: str, value: float | None, low: float, unit: str = "") -> None:
    if value is not None and value < low:
        raise BadOption(f"{name} {value}{unit}: must be at least {low}{unit}")


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
    tool_work_s: float
    think_time_s: float
    report_json: str | None
    isolation_matrix: bool = False
    sla_rules: tuple[Rule, ...] = ()
    scopes: dict[str, list[str]] = field(default_factory=dict)  # tool and scenario names -> tools
    junit_xml: str | None = None
    sample_interval_s: float = 1.0
    shape_stages: tuple[int, ...] | None = None
    shape_hold_s: float = 12.0
    timeseries_csv: str | None = None
    chaos: tuple[Fault, ...] = ()
    history: str | None = None
    seed: int | None = None
    initial_balance: int = INITIAL_BALANCE

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        """Validate Locust's parsed options; raises BadOption with a one-line reason."""
        if getattr(options, "num_users", None) is not None and options.num_users < 1:
            raise BadOption(f"--users {options.num_users}: at least one agent is needed")
        _at_least("--accounts", options.accounts, 2)
        _at_least("--counters", options.counters, 1)
        _at_least("--queue-capacity", options.queue_capacity, 1)
        _at_least("--teams", options.teams, 1)
        _at_least("--hold-time", options.hold_time, 0, " ms")
        _at_least("--pool-size", options.pool_size, 1)
        if options.pool_timeout <= 0:
            raise BadOption(f"--pool-timeout {options.pool_timeout}: must be more than 0 seconds")
        _at_least("--max-tries", options.max_tries, 1)
        _at_least("--backoff-base", options.backoff_base, 0, " ms")
        _at_least("--backoff-max", options.backoff_max, options.backoff_base, " ms")
        _at_least("--deadlock-timeout", options.deadlock_timeout, 1, " ms")
        _at_least("--lock-timeout", options.lock_timeout, 0, " ms")
        _at_least("--tool-work", options.tool_work, 0, " ms")
        _at_least("--think-time", options.think_time, 0, " ms")
        _at_least("--seed", options.seed, 0)
        shape_stages = _shape_stages(options)
        if options.sample_interval <= 0:
            raise BadOption(f"--sample-interval {options.sample_interval}: must be more than 0 seconds")
        schema = _schema_name(options.schema)
        try:
            user_scenarios = (load_tools_module(options.tools_module),) if options.tools_module else ()
            scenarios = tuple(select(options.scenario, options.isolation, user_scenarios))
        except BadToolsModule as exc:
            raise BadOption(str(exc)) from None
        except UnknownScenario as exc:
            raise BadOption(f"--scenario: {exc}") from None
        params = ScenarioParams(
            accounts=options.accounts,
            keys=RedisKeys(schema),
            counters=options.counters,
            teams=options.teams,
            queue_capacity=options.queue_capacity,
            hold_s=options.hold_time / 1000.0,
        )
        if not any(wt.weight > 0 for scenario in scenarios for wt in scenario.tools(params)):
            raise BadOption(f"--scenario {options.scenario!r}: the mix has no tool with a weight above 0")
        scopes = _scopes(scenarios, params)
        try:
            sla_rules = load_rules(Path(options.sla) if options.sla else DEFAULT_SLA_FILE, scopes)
        except BadSlaFile as exc:
            raise BadOption(str(exc)) from None
        try:
            chaos = parse_chaos(options.chaos, distributed=bool(options.processes or options.master or options.worker))
        except BadChaos as exc:
            raise BadOption(f"--chaos {options.chaos!r}: {exc}") from None
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
            tool_work_s=options.tool_work / 1000.0,
            think_time_s=options.think_time / 1000.0,
            report_json=options.report_json,
            isolation_matrix=options.isolation_matrix,
            sla_rules=sla_rules,
            scopes=scopes,
            junit_xml=options.junit_xml,
            sample_interval_s=options.sample_interval,
            shape_stages=shape_stages,
            shape_hold_s=options.shape_hold,
            timeseries_csv=options.timeseries_csv,
            chaos=chaos,
            history=options.history or None,
            seed=options.seed,
        )

    def seed_for_test(self) -> int:
        """The seed of one test: --seed's, or a new one (the report says which, to run it again)."""
        return self.seed if self.seed is not None else secrets.randbelow(_RANDOM_SEEDS)

    def most_agents(self, target: int) -> int:
        """The most agents a test started for `target` agents runs at once: with a load shape,
        its largest stage. The pool is sized for that when the test starts."""
        return max((target, *(self.shape_stages or ())))

    def pool_size_for(self, agents: int) -> int:
        """The pool of one load process that runs `agents` agents."""
        if self.pool_size is not None:
            return self.pool_size
        size = min(max(1, agents), DEFAULT_POOL_SIZE)
        if any(s.name == "pool_exhaustion" for s in self.scenarios):
            return max(1, size // 2)  # fewer connections than agents: they must queue
        return size

    def connections_needed(self, agents: int, processes: int) -> tuple[int, int]:
        """(all the PostgreSQL sessions a run of `agents` on `processes` load processes opens,
        the pool of one process)."""
        per_process = self.pool_size_for(math.ceil(agents / max(1, processes)))
        return per_process * processes + HARNESS_SESSIONS, per_process
