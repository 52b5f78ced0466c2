"""Every toolclash option, declared once. From this table come Locust's parser arguments (so the
help, the environment variables and the config-file keys), the web UI's start form (the per-run
options), the per-run/fixed split of a test's settings, the settings summary and its fingerprint,
and what the compose file passes; tests/test_declared_options.py checks `make options`,
docs/options.md's table, the web UI's form, docker-compose.yml and .env.example against it.

Adding an option: one entry here (the help prints each kind in this order), its validation in
harness.config.settings when `at_least` does not say it all, a row in docs/options.md, and, if
composed, its variable in docker-compose.yml and .env.example (docs/development.md, "Adding an
option")."""

from __future__ import annotations

from typing import Any

from db.durations import parse_duration
from db.pool import ISOLATION_LEVELS
from harness.config.option import Option

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_SCHEMA", "FIXED_OPTIONS", "OPTIONS", "RUN_OPTIONS", "add_arguments"]

# Agents share a bounded pool, as on an AI platform: more agents queue for it (that wait is
# measured) instead of asking the server for one connection each. 20 per process leaves room for
# 4 processes and the harness's own sessions on a stock server (max_connections 100).
DEFAULT_POOL_SIZE = 20
DEFAULT_SCHEMA = "toolclash"

OPTIONS: tuple[Option, ...] = (
    # Fixed: the servers, the transport, the schema, the files written, the load shape.
    Option("--pg-dsn", None,
           "PostgreSQL to stress (libpq DSN or URI). Unset with --redis-url unset too: an embedded PostgreSQL is"
           " started", per_run=False),
    Option("--redis-url", None, "Redis to stress (redis:// or unix:// URL). Unset: an embedded Redis is started",
           per_run=False),
    Option("--schema", DEFAULT_SCHEMA,
           f"the schema the harness works in; nothing outside it is touched (default: {DEFAULT_SCHEMA})",
           per_run=False, summarized=True),
    # How the agents reach their tools: in their own processes (no option), or over MCP.
    Option("--mcp-url", None,
           "call every tool over MCP at this Streamable HTTP endpoint (your MCP server, writing to --pg-dsn and"
           " --redis-url), e.g. http://127.0.0.1:8000/mcp (default: the tools run in the load's processes)",
           per_run=False),
    Option("--mcp-server", None,
           "call every tool over MCP on toolclash's reference tool server, started for each test on 127.0.0.1:"
           " builtin, or careless (its mistakes the audits must catch); excludes --mcp-url", per_run=False,
           choices=("builtin", "careless"), composed=False),
    Option("--mcp-era", "auto",
           "the MCP protocol era: session (initialize, Mcp-Session-Id), stateless (2026-07-28), or auto: ask the"
           " server (default: auto)", per_run=False, choices=("auto", "session", "stateless")),
    Option("--mcp-token", None, "a bearer token sent to the MCP server with every request; never shown",
           per_run=False),
    Option("--mcp-ca-file", None, "check the https MCP server's certificate against these authorities (PEM)"
           " rather than the system's", per_run=False),
    Option("--mcp-insecure", False, "do not check the https MCP server's certificate at all", per_run=False,
           switch=True),
    Option("--reset", False, "drop and re-create the schema first, even if an interrupted run left data in it",
           per_run=False, switch=True),
    # Not composed: each level of the matrix is a run of one process.
    Option("--isolation-matrix", False,
           "run the scenarios once per isolation level and print the table to choose a level by",
           per_run=False, switch=True, composed=False),
    Option("--require-levels", None,
           "with --isolation-matrix: comma-separated isolation levels that must pass too; the strongest level run"
           " (serializable) always must (default: none)", per_run=False, composed=False),
    Option("--sample-interval", 1.0,
           "seconds between two samples of the servers (locks, counters, Redis INFO) during the run (default: 1)",
           per_run=False, type=float, unit="s"),
    Option("--timeseries-csv", None, "write the servers' samples to this CSV file, one row per sample",
           per_run=False),
    Option("--shape", None,
           "a load shape: agents in stages (steps: 10,20,30,40,50; spike: 10,60,10), per-stage figures in the report",
           per_run=False, choices=("steps", "spike")),
    Option("--shape-agents", None, "the shape's stages as comma-separated agent counts, e.g. 20,40,80,160",
           per_run=False),
    Option("--shape-hold", 12.0, "seconds each stage of the shape is held (default: 12)", per_run=False, type=float,
           unit="s"),
    # Not composed: the search runs each probe as a run of its own (its workers if --processes), or as a
    # test of the headless master it runs in.
    Option("--capacity", False,
           "search for the most agents the platform serves with every SLA rule and every audit holding: probes"
           " of --users agents (default 1), doubled until one fails, then bisected; --run-time is its budget"
           " (default 10 min)", per_run=False, switch=True, composed=False),
    Option("--capacity-precision", "10%",
           "with --capacity: how close the passing and the failing probe must come, in agents (2) or a share"
           " of the capacity (10%%) (default: 10%%)", per_run=False, composed=False),
    Option("--capacity-hold", 20.0,
           "with --capacity: seconds each probe measures at least after its warm-up, in four steps checked as a"
           " sliding window of two (default: 20)", per_run=False, type=float, unit="s", composed=False),
    Option("--capacity-warmup", 5.0,
           "with --capacity: seconds of each probe left out of its SLA figures, never out of its audits"
           " (default: 5)", per_run=False, type=float, unit="s", at_least=0, composed=False),
    Option("--capacity-repeats", 2,
           "with --capacity: k, the probes at each side of the boundary, all of which must pass (or fail)"
           " (default: 2)", per_run=False, type=int, at_least=1, composed=False),
    Option("--capacity-data", "fresh",
           "with --capacity: fresh: each probe's run re-creates and seeds the schema; kept: the first probe's"
           " does, the others run on the data left (a --tools-module's or your MCP server's, which toolclash"
           " cannot reseed), judged by their own calls' identities (default: fresh)", per_run=False,
           choices=("fresh", "kept"), composed=False),
    Option("--expect-capacity", None,
           "with --capacity: fail (exit 1, and a failed JUnit case) when the capacity found is below this many"
           " agents", per_run=False, type=int, at_least=1, composed=False),
    Option("--report-json", None, "write the run's report as JSON to this path", per_run=False),
    Option("--junit-xml", None, "write one JUnit test case per SLA rule and per audit check to this path, for CI",
           per_run=False),
    Option("--history", None,
           "write a JSON-lines history of the run to this path, one line per call's invocation and one per its"
           " completion (a worker writes PATH.worker-<index>)", per_run=False),
    Option("--metrics-port", None,
           "serve Prometheus' /metrics on this port, on --web-host's address, from the local runner or the master"
           " (the web UI serves it on its own port too); a headless run serves it after its verdict until it is"
           " scraped once more, at most 60 s", per_run=False, type=int, at_least=1),
    # Per run: the scenarios, the data's sizes, the pool, the retries, the timeouts, the seed, the faults.
    Option("--scenario", "",
           "comma-separated scenarios to run (default: the default mix, or the --tools-module's tools)",
           per_run=True, summarized=True),
    Option("--tools-module", None,
           "a Python file of your own tools (functions whose first parameter is tx), run as a scenario named after"
           " it", per_run=True, summarized=True),
    Option("--isolation", "read_committed", "isolation level of every tool transaction (default: read_committed)",
           per_run=True, choices=tuple(sorted(ISOLATION_LEVELS)), summarized=True),
    Option("--accounts", 200, "credit accounts shared by the agents: fewer accounts, hotter rows (default: 200)",
           per_run=True, type=int, at_least=2, summarized=True),
    Option("--counters", 8, "isolation: counters the agents increment (default: 8)", per_run=True, type=int,
           at_least=1, summarized=True),
    Option("--queue-capacity", 50, "queue: jobs the bounded queue holds before it refuses more (default: 50)",
           per_run=True, type=int, at_least=1, summarized=True),
    Option("--teams", 4, "agent_state: teams sharing one plan each; fewer teams, more WATCH conflicts (default: 4)",
           per_run=True, type=int, at_least=1, summarized=True),
    Option("--consistency-model", "",
           "list_append: the consistency model its history must keep, by Elle's name, e.g. serializable,"
           " snapshot-isolation, strong-session-serializable (default: the one --isolation promises: read-committed,"
           " snapshot-isolation for repeatable_read, serializable)", per_run=True, summarized=True),
    Option("--hold-time", 50.0,
           "pool_exhaustion: ms its tool keeps its connection, working inside its transaction (default: 50)",
           per_run=True, type=float, unit="ms", at_least=0, summarized=True),
    # Durations: ms, or a distribution each one is drawn from (db.durations).
    Option("--tool-work", "5",
           "ms of work a tool does between its statements while holding its locks, or a distribution drawn at each"
           " tx.work(), in process only: lognormal:MEDIAN:P99, uniform:LOW:HIGH, exponential:MEAN, empirical:V1,V2,..."
           " (a unit may follow each value: 500ms, 2s) (default: 5)", per_run=True, type=parse_duration, unit="ms",
           summarized=True),
    Option("--think-time", "0",
           "ms an agent waits between two tool calls, or a distribution drawn at each wait, as for --tool-work, e.g."
           " lognormal:2s:10s (default: 0)", per_run=True, type=parse_duration, unit="ms", summarized=True),
    Option("--calls-per-turn", "1",
           "tool calls per agent turn, run at once, drawn by weight: CALLS:WEIGHT comma-separated, e.g."
           " 1:60,2:25,4:15 (default: 1, one call after the other)", per_run=True, summarized=True),
    Option("--same-key", 0.0,
           "the chance, 0 to 1, that a later call of a turn takes a key (account, counter, team) an earlier call"
           " of the turn took (default: 0, keys drawn apart)", per_run=True, type=float, at_least=0,
           summarized=True),
    Option("--trace", None,
           "a JSON-lines file of a real agent's turns (think time, calls, tool names and arguments) the agents"
           " replay instead of --think-time, --calls-per-turn and --same-key (default: none, the turn model)",
           per_run=True, summarized=True),
    Option("--writes", "guarded",
           "workflows: a write from what its agent read earlier is blind (written whatever changed since: lost"
           " updates) or guarded (refused when the version read changed) (default: guarded)", per_run=True,
           choices=("blind", "guarded"), summarized=True),
    Option("--pool-size", None,
           f"connections per load process (default: one per agent on that process, at most {DEFAULT_POOL_SIZE};"
           " half of that when pool_exhaustion runs)", per_run=True, type=int, at_least=1, summarized=True),
    Option("--pool-timeout", 5.0, "seconds a call waits for a connection before it fails as a pool timeout"
           " (default: 5)", per_run=True, type=float, unit="s", summarized=True),
    Option("--max-tries", 5, "attempts per call, retries included, for retryable failures (default: 5)",
           per_run=True, type=int, at_least=1, summarized=True),
    Option("--backoff-base", 10.0,
           "ms: backoff ceiling after the first failure, doubled per retry, full jitter (default: 10)",
           per_run=True, type=float, unit="ms", at_least=0, summarized=True),
    Option("--backoff-max", 500.0, "ms: the backoff ceiling never grows past this (default: 500)", per_run=True,
           type=float, unit="ms", summarized=True),
    Option("--deadlock-timeout", None,
           "ms: PostgreSQL deadlock_timeout for the harness's sessions, when the role may set it (default: the"
           " server's value)", per_run=True, type=int, unit="ms", at_least=1, summarized=True),
    Option("--lock-timeout", 0,
           "ms: PostgreSQL lock_timeout; a lock wait past it fails as lock_timeouts and is retried (default: 0, none)",
           per_run=True, type=int, unit="ms", at_least=0, summarized=True),
    Option("--seed", None,
           "the same seed gives every agent the same tools and arguments, call after call (default: a random seed,"
           " in the report)", per_run=True, type=int, at_least=0, summarized=True),
    Option("--chaos", None,
           "faults injected on purpose, kind:every[:share] comma-separated: pg-kill (terminate the load's backends),"
           " redis-kill (kill the load's Redis clients), worker-stop (one worker dies; distributed runs), mcp-kill"
           " (the --mcp-server tool server killed and started again), e.g. pg-kill:3s,redis-kill:5s:25%%; share"
           " default 50%%", per_run=True, summarized=True),
    # Not summarized: only the process that makes the verdict reads the SLA file.
    Option("--sla", None, "TOML file of SLA rules ([[rule]] metric, op, threshold, scope); default: sla/default.toml",
           per_run=True),
)

FIXED_OPTIONS = tuple(option for option in OPTIONS if not option.per_run)
RUN_OPTIONS = tuple(option for option in OPTIONS if option.per_run)


def add_arguments(parser: Any) -> None:
    """The `init_command_line_parser` listener: every option on Locust's parser, in two groups."""
    # Added to a group, not with parser.add_argument: Locust then leaves them out of the web UI's
    # start form, rightly, since they are fixed when the process starts (servers reached, schema claimed).
    fixed = parser.add_argument_group("toolclash", "the servers, the MCP server, the schema, the files written, the"
                                                   " load shape: fixed when the process starts")
    for option in FIXED_OPTIONS:
        fixed.add_argument(option.flag, **option.parser_arguments())
    per_run = parser.add_argument_group("toolclash, per test", "read again at each test start, taken from the master"
                                                               " by every worker, and offered by the web UI's form")
    for option in RUN_OPTIONS:
        action = per_run.add_argument(option.flag, **option.parser_arguments())
        # What Locust's own parser.add_argument(include_in_web_ui=True) sets: the web UI's start
        # form offers the option, and Locust applies the value to parsed_options for that test.
        action.include_in_web_ui, action.is_secret, action.is_required, action.is_multiple = True, False, False, False
