"""What toolclash publishes to monitoring systems (/metrics for Prometheus, OTLP push), read at
each scrape or push from the judging process's figures: the same merged metrics the report is
built from (harness.watch.metrics; on a master, the sum of the workers' shipments), the server
sampler's latest row, and after each stop the report's verdict. One source for every exporter.

Names are OpenTelemetry's (dotted, with a unit); `prometheus_name` translates them as
OpenTelemetry's Prometheus compatibility does (docs/monitoring.md): dots to underscores, the unit
`s` as `_seconds`, counters ending in `_total`; attributes' dots as underscores too. Every series
has a `run_id` label: a web-UI ramp is a new run (its counters start from 0 as new series), never
a reset of the last one's.

Histograms are re-bucketed from toolclash's own (exact below 1 ms, three significant digits above:
harness.watch.histogram) into BOUNDS_S. Each bound is itself one of those buckets, so a bucket's
count is the number of recorded values at or below its bound, as toolclash rounded them: the
same rounding the report's percentiles read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from harness.watch.histogram import Histogram
from harness.watch.metrics import CONFLICT_COUNTERS, Metrics, ToolStats

if TYPE_CHECKING:
    from harness.report_shape import Report

__all__ = ["BOUNDS_S", "TOOL_LABELS", "Buckets", "Family", "Judged", "families", "prometheus_name"]

# The upper bounds of every exported histogram's buckets, in seconds (then +Inf): 100 µs to 60 s,
# about three a decade, finer where tool calls and pool waits usually fall.
BOUNDS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)
_BOUNDS_US = tuple(round(bound * 1_000_000) for bound in BOUNDS_S)
assert all(Histogram.bucket(us) == us for us in _BOUNDS_US), "each bound must be one of toolclash's buckets"

# At most this many tools get a `tool` label of their own (the first ones that made a call); a
# user's module with more has the rest summed under tool="other".
TOOL_LABELS = 50
OTHER_TOOLS = "other"

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Buckets:
    """One histogram series: cumulative counts at each of BOUNDS_S, then the count and sum."""

    cumulative: tuple[int, ...]
    count: int
    sum_s: float
    min_s: float | None  # the smallest and largest values recorded (OTLP's min and max); None: none
    max_s: float | None

    @classmethod
    def of(cls, histogram: Histogram) -> Buckets:
        cumulative, seen, position = [], 0, 0
        keys = sorted(histogram.counts)
        for bound in _BOUNDS_US:
            while position < len(keys) and keys[position] <= bound:
                seen += histogram.counts[keys[position]]
                position += 1
            cumulative.append(seen)
        return cls(tuple(cumulative), histogram.count,
                   sum(key * count for key, count in histogram.counts.items()) / 1_000_000,
                   keys[0] / 1_000_000 if keys else None, keys[-1] / 1_000_000 if keys else None)


@dataclass(frozen=True)
class Family:
    """One exported metric: its OpenTelemetry name and unit, and its series (label values in
    `labels` order, `run_id` first)."""

    name: str
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...]
    series: tuple[tuple[tuple[str, ...], float | Buckets], ...]

    @property
    def prometheus(self) -> str:
        return prometheus_name(self.name, self.unit, self.kind)

    @property
    def prometheus_labels(self) -> tuple[str, ...]:
        """The label names in Prometheus: OpenTelemetry's attribute names, dots as underscores."""
        return tuple(_not_prometheus(label) for label in self.labels)


_UNIT_SUFFIXES = {"s": "seconds"}


def _not_prometheus(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """An OpenTelemetry metric's name in Prometheus: what is not a letter, digit or underscore as
    `_`, the unit's suffix (`s`: `_seconds`; annotations such as `{call}` add none), and `_total`
    for a counter."""
    translated = _not_prometheus(name)
    suffix = _UNIT_SUFFIXES.get(unit)
    if suffix and not translated.endswith(f"_{suffix}"):
        translated += f"_{suffix}"
    return f"{translated}_total" if kind == "counter" else translated


@dataclass(frozen=True)
class Judged:
    """The judging process's figures at one moment (harness.run.judge.Judge.judged)."""

    run_id: str  # the current (or last) test's; "" before the first
    metrics: Metrics  # what the agents recorded in it so far: the report's source
    agents: int
    over_mcp: bool  # the pool and deadlock timings are the tool server's then: not seen
    server_sample: dict[str, Any] | None  # the server sampler's latest row
    faults: list[dict[str, Any]]  # --chaos faults injected so far
    report: Report | None  # the last audited test's


def families(judged: Judged) -> list[Family]:
    """Every exported family with its series now; none before the first test."""
    if not judged.run_id:
        return []
    run = (judged.run_id,)
    metrics = judged.metrics
    tools = _capped_tools(metrics)
    conflict_kinds = [kind for kind in CONFLICT_COUNTERS if kind != "indeterminate"]
    return [
        Family("toolclash.tool.calls", "counter", "{call}",
               "tool calls that finished, by tool and outcome (succeeded, failed, indeterminate, cut_off); the"
               " report's tools.*.calls", ("run_id", "tool", "outcome"),
               tuple(((*run, tool, outcome), float(getattr(stats, outcome))) for tool, stats in tools.items()
                     for outcome in ("succeeded", "failed", "indeterminate", "cut_off"))),
        *[Family(f"toolclash.tool.{name}", "counter", unit, text, ("run_id", "tool"),
                 tuple(((*run, tool), float(getattr(stats, field))) for tool, stats in tools.items()))
          for name, field, unit, text in (
              ("attempts", "attempts", "{attempt}", "attempts of the tool calls, retries included"),
              ("retries", "retries", "{retry}", "attempts after a call's first"),
              ("refusals", "refused", "{call}", "failed calls the tool itself refused (its business 'no')"))],
        Family("toolclash.conflicts", "counter", "{attempt}", "failed attempts, by conflict kind; the report's"
               " conflicts", ("run_id", "kind"),
               tuple(((*run, kind), float(metrics.conflicts.get(kind, 0))) for kind in conflict_kinds)),
        Family("toolclash.calls.indeterminate", "counter", "{call}",
               "calls whose outcome the platform left unknown (a connection or a reply lost while COMMIT was in"
               " flight)", ("run_id",),
               ((run, float(metrics.conflicts["indeterminate"])),)),
        Family("toolclash.errors", "counter", "{attempt}", "attempts that failed as errors (bugs, constraint"
               " violations), not conflicts", ("run_id",), ((run, float(metrics.errors)),)),
        Family("toolclash.faults", "counter", "{fault}", "--chaos faults injected, by kind", ("run_id", "kind"),
               tuple(((*run, kind), float(count))
                     for kind, count in Counter(fault["kind"] for fault in judged.faults).items())),
        Family("toolclash.tool.duration", "histogram", "s", "a tool call's latency, pool waits, retries and"
               " backoff included", ("run_id", "tool"),
               tuple(((*run, tool), Buckets.of(stats.latency)) for tool, stats in tools.items())),
        *_operations(metrics, run),
        *_server_side_histograms(judged, run),
        *_gauges(judged, run),
        *_verdict(judged.report),
    ]


def _operations(metrics: Metrics, run: tuple[str]) -> Iterator[Family]:
    """Each attempt that reached its server, after OpenTelemetry's database and MCP client
    conventions: in process, by system, SQLSTATE and failure kind; over MCP, by failure kind."""
    database: dict[tuple[str, ...], Histogram] = {}
    mcp: dict[tuple[str, ...], Histogram] = {}
    for (system, status, failure_kind), histogram in metrics.operations.items():
        if system == "mcp":
            mcp.setdefault(run + (failure_kind,), Histogram()).merge(histogram)
        else:
            database[run + (system, status, failure_kind)] = histogram
    if database:
        yield Family("db.client.operation.duration", "histogram", "s",
                     "an attempt's time on its server, its pool wait left out: db.response.status_code is the"
                     " SQLSTATE a failed one got, error.type its failure's kind",
                     ("run_id", "db.system.name", "db.response.status_code", "error.type"),
                     tuple((labels, Buckets.of(histogram)) for labels, histogram in sorted(database.items())))
    if mcp:
        yield Family("mcp.client.operation.duration", "histogram", "s",
                     "an attempt's tools/call request over MCP, to its reply: error.type its failure's kind",
                     ("run_id", "error.type"),
                     tuple((labels, Buckets.of(histogram)) for labels, histogram in sorted(mcp.items())))


def _server_side_histograms(judged: Judged, run: tuple[str]) -> Iterator[Family]:
    metrics = judged.metrics
    if not judged.over_mcp:  # over MCP the tool server waits and resolves: the agents never see it
        yield Family("db.client.connection.wait_time", "histogram", "s",
                     "a call's wait for one of its load process's pool connections, per attempt", ("run_id",),
                     ((run, Buckets.of(metrics.distributions["pool_wait"])),))
        yield Family("toolclash.deadlock.resolution", "histogram", "s",
                     "from a call's first deadlock error to its success (or its giving up)", ("run_id",),
                     ((run, Buckets.of(metrics.distributions["deadlock_resolution"])),))
    if metrics.turns.turns:
        yield Family("toolclash.turn.duration", "histogram", "s",
                     "an agent turn's latency: from its calls' start to the last one's end", ("run_id",),
                     ((run, Buckets.of(metrics.turns.latency)),))


def _gauges(judged: Judged, run: tuple[str]) -> Iterator[Family]:
    yield Family("toolclash.agents", "gauge", "{agent}", "agents running now", ("run_id",),
                 ((run, float(judged.agents)),))
    sample = judged.server_sample or {}
    for name, key, text in (
            ("toolclash.pg.lock_waiters", "pg_lock_waiters",
             "PostgreSQL sessions waiting for a lock (the latest sample)"),
            ("toolclash.pg.blocking_chain.longest", "pg_longest_blocking_chain",
             "the longest chain of sessions blocking one another (the latest sample)")):
        if sample.get(key) is not None:
            yield Family(name, "gauge", "{session}", text, ("run_id",), ((run, float(sample[key])),))
    waiting = _pool_waiting(judged.metrics)
    if waiting is not None:
        yield Family("toolclash.pool.requests_waiting", "gauge", "{request}",
                     "calls waiting for a pool connection, over the load processes (each one's latest second)",
                     ("run_id",), ((run, float(waiting)),))


def _verdict(report: Report | None) -> Iterator[Family]:
    """After each stop: the last audited test's verdict, each SLA rule and each audit check (1 held)."""
    if report is None:
        return
    run = (report["run"]["run_id"],)
    yield Family("toolclash.verdict.pass", "gauge", "", "1: the run passed, 0: it failed", ("run_id",),
                 ((run, 1.0 if report["verdict"] == "pass" else 0.0),))
    rules: dict[str, bool] = {}
    for rule in report["sla"]:
        rules[rule["name"]] = rules.get(rule["name"], True) and rule["ok"]
    yield Family("toolclash.sla.rule.ok", "gauge", "", "1: the SLA rule held, 0: it failed", ("run_id", "rule"),
                 tuple(((*run, name), 1.0 if ok else 0.0) for name, ok in rules.items()))
    checks: dict[str, bool] = {}
    for check in report["audit"]["checks"]:
        checks[check["name"]] = checks.get(check["name"], True) and check["ok"]
    yield Family("toolclash.audit.check.ok", "gauge", "", "1: the audit check held (every check of that name),"
                 " 0: it failed", ("run_id", "check"),
                 tuple(((*run, name), 1.0 if ok else 0.0) for name, ok in checks.items()))


def _capped_tools(metrics: Metrics) -> dict[str, ToolStats]:
    """Each label's stats: the first TOOL_LABELS tools to call under their own name (Metrics.tools
    keeps that order), the rest merged under OTHER_TOOLS."""
    by_label: dict[str, ToolStats] = {}
    for position, (name, stats) in enumerate(metrics.tools.items()):
        by_label.setdefault(name if position < TOOL_LABELS else OTHER_TOOLS, ToolStats()).merge(stats)
    return by_label


def _pool_waiting(metrics: Metrics) -> int | None:
    """Calls waiting for a connection: each load process's latest second, added up (None over MCP,
    where no pool is sampled, or before any sample)."""
    latest: dict[int, dict[str, Any]] = {}
    for sample in metrics.load_samples:
        if sample["process"] not in latest or sample["t"] >= latest[sample["process"]]["t"]:
            latest[sample["process"]] = sample
    values: list[int | None] = [sample.get("pool_waiting") for sample in latest.values()]
    counted = [value for value in values if value is not None]
    return sum(counted) if values and len(counted) == len(values) else None
