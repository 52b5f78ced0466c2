"""toolclash's command-line options (also environment variables and Locust config-file keys),
and their validation into one immutable `Settings`."""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from db.pool import ISOLATION_LEVELS
from db.redis_keys import RedisKeys
from harness.config.shapes import SHAPES
from harness.config.sla import DEFAULT_SLA_FILE, BadSlaFile, Rule, load_rules
from harness.faults.chaos import BadChaos, Fault, parse_chaos
from tasks.scenarios import Scenario, ScenarioParams, UnknownScenario, select
from tasks.user_tools import BadToolsModule, load_tools_module
from transport.retry import RetryPolicy

__all__ = ["BadOption", "DEFAULT_POOL_SIZE", "DEFAULT_SCHEMA", "HARNESS_SESSIONS", "RUN_OPTIONS", "RunOption",
           "Settings", "add_arguments", "file_digest", "typed_run_options"]

INITIAL_BALANCE = 1_000_000
# Agents share a bounded pool, as on an AI platform: more agents queue for it (that wait is
# measured) instead of asking the server for one connection each. 20 per process leaves room for
# 4 processes and the harness's own sessions on a stock server (max_connections 100).
DEFAULT_POOL_SIZE = 20
# The harness's sessions besides the coordinator's (which is open when the budget is checked):
# the server sampler's, the drain's (harness/verdict/drainer.py) and the fault injector's.
HARNESS_SESSIONS = 3
DEFAULT_SCHEMA = "toolclash"


class BadOption(ValueError):
    """An option's value makes no sense; the message names the option and the value."""


@dataclass(frozen=True)
class RunOption:
    """An option that may change from one test to the next: read again at each test start
    (Locust forwards the master's to every worker with each spawn message), and offered by the
    web UI's start form."""

    flag: str
    env_var: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def typed(self, value: Any) -> Any:
        """`value` as this option's type: argparse gives it typed, the web UI's form as text
        ('' for an option without a default: none)."""
        given = value
        if isinstance(value, str):
            text = value.strip()
            if not text and (self.default is None or self.type is not str):
                return None if self.default is None else self._refuse(given, "give a value")
            if self.type is not str:
                try:
                    value = self.type(text)
                except ValueError:
                    self._refuse(given, "give a whole number" if self.type is int else "give a number")
        if isinstance(value, float) and not math.isfinite(value):
            self._refuse(given, "give a finite number")
        if self.choices is not None and value not in self.choices:
            self._refuse(given, f"choose one of {', '.join(self.choices)}")
        return value

    def _refuse(self, value: Any, what: str) -> NoReturn:
        raise BadOption(f"{self.flag} {value!r}: {what}")


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("--scenario", "TOOLCLASH_SCENARIO", "",
              "comma-separated scenarios to run (default: the default mix, or the --tools-module's tools)"),
    RunOption("--tools-module", "TOOLCLASH_TOOLS_MODULE", None,
              "a Python file of your own tools (functions whose first parameter is tx), run as a scenario named"
              " after it"),
    RunOption("--isolation", "TOOLCLASH_ISOLATION", "read_committed",
              "isolation level of every tool transaction (default: read_committed)",
              choices=tuple(sorted(ISOLATION_LEVELS))),
    RunOption("--accounts", "TOOLCLASH_ACCOUNTS", 200,
              "credit accounts shared by the agents: fewer accounts, hotter rows (default: 200)", int),
    RunOption("--counters", "TOOLCLASH_COUNTERS", 8, "isolation: counters the agents increment (default: 8)", int),
    RunOption("--queue-capacity", "TOOLCLASH_QUEUE_CAPACITY", 50,
              "queue: jobs the bounded queue holds before it refuses more (default: 50)", int),
    RunOption("--teams", "TOOLCLASH_TEAMS", 4,
              "agent_state: teams sharing one plan each; fewer teams, more WATCH conflicts (default: 4)", int),
    RunOption("--hold-time", "TOOLCLASH_HOLD_TIME", 50.0,
              "pool_exhaustion: ms its tool keeps its connection, working inside its transaction (default: 50)", float),
    RunOption("--tool-work", "TOOLCLASH_TOOL_WORK", 5.0,
              "ms of work a tool does between its statements while holding its locks (default: 5)", float),
    RunOption("--think-time", "TOOLCLASH_THINK_TIME", 0.0, "ms an agent waits between two tool calls (default: 0)",
              float),
    RunOption("--pool-size", "TOOLCLASH_POOL_SIZE", None,
              f"connections per load process (default: one per agent on that process, at most {DEFAULT_POOL_SIZE};"
              " half of that when pool_exhaustion runs)", int),
    RunOption("--pool-timeout", "TOOLCLASH_POOL_TIMEOUT", 5.0,
              "seconds a call waits for a connection before it fails as a pool timeout (default: 5)", float),
    RunOption("--max-tries", "TOOLCLASH_MAX_TRIES", 5,
              "attempts per call, retries included, for retryable failures (default: 5)", int),
    RunOption("--backoff-base", "TOOLCLASH_BACKOFF_BASE", 10.0,
              "ms: backoff ceiling after the first failure, doubled per retry, full jitter (default: 10)", float),
    RunOption("--backoff-max", "TOOLCLASH_BACKOFF_MAX", 500.0,
              "ms: the backoff ceiling never grows past this (default: 500)", float),
    RunOption("--deadlock-timeout", "TOOLCLASH_DEADLOCK_TIMEOUT", None,
              "ms: PostgreSQL deadlock_timeout for the harness's sessions, when the role may set it"
              " (default: the server's value)", int),
    RunOption("--lock-timeout", "TOOLCLASH_LOCK_TIMEOUT", 0,
              "ms: PostgreSQL lock_timeout; a lock wait past it fails as lock_timeouts and is retried"
              " (default: 0, none)", int),
    RunOption("--seed", "TOOLCLASH_SEED", None,
              "the same seed gives every agent the same tools and arguments, call after call (default: a random"
              " seed, in the report)", int),
    RunOption("--chaos", "TOOLCLASH_CHAOS", None,
              "faults injected on purpose, kind:every[:share] comma-separated: pg-kill (terminate the load's"
              " backends), redis-kill (kill the load's Redis clients), worker-stop (one worker dies; distributed"
              " runs), e.g. pg-kill:3s,redis-kill:5s:25%%; share default 50%%"),
    RunOption("--sla", "TOOLCLASH_SLA", None,
              "TOML file of SLA rules ([[rule]] metric, op, threshold, scope); default: sla/default.toml"),
)


def add_arguments(parser: Any) -> None:
    """The `init_command_line_parser` listener."""
    group = parser.add_argument_group("toolclash", "the servers, the schema, the files written, the load shape:"
                                                   " fixed when the process starts")
    # Added to a group, not with parser.add_argument: Locust then leaves them out of the web UI's
    # start form, rightly, since they are fixed when the process starts (servers reached, schema claimed).
    add = group.add_argument
    add("--pg-dsn", env_var="TOOLCLASH_PG_DSN", default=None,
        help="PostgreSQL to stress (libpq DSN or URI)."
             " Unset with --redis-url unset too: an embedded PostgreSQL is started")
    add("--redis-url", env_var="TOOLCLASH_REDIS_URL", default=None,
        help="Redis to stress (redis:// or unix:// URL). Unset: an embedded Redis is started")
    add("--schema", env_var="TOOLCLASH_SCHEMA", default=DEFAULT_SCHEMA,
        help=f"the schema the harness works in; nothing outside it is touched (default: {DEFAULT_SCHEMA})")
    add("--reset", env_var="TOOLCLASH_RESET", action="store_true", default=False,
        help="drop and re-create the schema first, even if an interrupted run left data in it")
    add("--isolation-matrix", env_var="TOOLCLASH_ISOLATION_MATRIX", action="store_true", default=False,
        help="run the scenarios once per isolation level and print the table to choose a level by")
    add("--require-levels", env_var="TOOLCLASH_REQUIRE_LEVELS", default=None,
        help="with --isolation-matrix: comma-separated isolation levels that must pass too; the strongest level"
             " run (serializable) always must (default: none)")
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
    add("--report-json", env_var="TOOLCLASH_REPORT_JSON", default=None,
        help="write the run's report as JSON to this path")
    add("--junit-xml", env_var="TOOLCLASH_JUNIT_XML", default=None,
        help="write one JUnit test case per SLA rule and per audit check to this path, for CI")
    add("--history", env_var="TOOLCLASH_HISTORY", default=None,
        help="write a JSON-lines history of the run to this path, one line per call's invocation and one per its"
             " completion (a worker writes PATH.worker-<index>)")
    per_run = parser.add_argument_group("toolclash, per test", "read again at each test start, taken from the master"
                                                               " by every worker, and offered by the web UI's form")
    for option in RUN_OPTIONS:
        action = per_run.add_argument(option.flag, env_var=option.env_var, default=option.default, help=option.help,
                                      type=None if option.type is str else option.type, choices=option.choices)
        # What Locust's own parser.add_argument(include_in_web_ui=True) sets: the web UI's start
        # form offers the option, and Locust applies the value to parsed_options for that test.
        action.include_in_web_ui, action.is_secret, action.is_required, action.is_multiple = True, False, False, False


def typed_run_options(options: Any) -> argparse.Namespace:
    """A copy of Locust's parsed options with the per-run ones typed (see RunOption.typed);
    raises BadOption naming the option and the value."""
    typed = {o.dest: o.typed(getattr(options, o.dest, o.default)) for o in RUN_OPTIONS}
    return argparse.Namespace(**{**vars(options), **typed})


# A random seed below this: short enough to type into --seed.
_RANDOM_SEEDS = 2**32

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
    required_levels: tuple[str, ...] = ()  # with isolation_matrix: the levels that must pass, besides the strongest
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
    tools_module: str | None = None
    tools_digest: str | None = None  # the --tools-module file's SHA-256: every process must run the same code

    @classmethod
    def from_options(cls, options: Any, *, judge: bool = True) -> Settings:
        """Validate Locust's parsed options; raises BadOption with a one-line reason. `judge`:
        this process makes the verdict (local runner or master), so the SLA file is read here; a
        worker never reads it (the path is the master's)."""
        options = typed_run_options(options)
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
        required_levels = _required_levels(options)
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
            required_levels=required_levels,
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
            tools_module=options.tools_module,
            tools_digest=tools_digest,
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


def file_digest(path: str) -> str:
    """The SHA-256 of a file's bytes, hex; raises OSError."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
