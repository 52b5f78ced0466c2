"""Service-level rules: read from a TOML file (--sla), checked against a run's report.

    [[rule]]
    metric = "tool_p95_ms"     # see METRICS
    op = "<"                   # <, <=, >, >=
    threshold = 2000
    scope = "deduct_credits"   # optional: a tool or a scenario
    name = "deductions stay fast"  # optional

sla/default.toml holds the product brief's rules; it is what runs without --sla.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from db.audits import ANOMALIES
from db.errors import Failure
from harness.report_shape import ConflictCounter, Figures, SlaResult, ToolFigures
from harness.watch.metrics import CONFLICT_COUNTERS

__all__ = ["BadSlaFile", "DEFAULT_SLA_FILE", "DEADLOCK_TIMINGS", "LOAD_SESSIONS", "METRICS", "POOL", "Rule",
           "SERVER_ATTEMPTS", "evaluate", "load_rules", "not_measurable"]

DEFAULT_SLA_FILE = Path(__file__).resolve().parents[2] / "sla" / "default.toml"

_OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le,
                                                   ">": operator.gt, ">=": operator.ge}

# A metric reads a report's figures (a whole run's, or one stage's), for the tools in scope (None: all).
Reader = Callable[[Figures, list[str] | None], float | None]
_ToolCount = Literal["calls", "succeeded", "failed", "refused", "indeterminate", "cut_off", "attempts"]
_ToolPercentile = Literal["p50_ms", "p95_ms", "p99_ms"]
_Statistic = Literal["p50", "p95", "p99", "max"]
_TOOL_PERCENTILES: tuple[_ToolPercentile, ...] = ("p50_ms", "p95_ms", "p99_ms")
_STATISTICS: tuple[_Statistic, ...] = ("p50", "p95", "p99", "max")


class BadSlaFile(ValueError):
    """The message names the file, the rule and what is wrong, in one line."""


@dataclass(frozen=True)
class Metric:
    kind: str  # "ms", "rate", "count" or "per_minute": what thresholds make sense
    read: Reader
    per_tool: bool = False  # unscoped, it is checked for each tool
    scoped: bool = False  # a rule may narrow it to a tool or a scenario
    # Read from the tool calls: with no call in scope there is nothing to hold, and the rule fails
    # (a run that made no call must never pass on such a rule).
    over_calls: bool = False


def _tools(report: Figures, tools: list[str] | None) -> list[ToolFigures]:
    return [t for name, t in report["tools"].items() if tools is None or name in tools]


def _total(report: Figures, tools: list[str] | None, key: _ToolCount) -> int:
    return sum(t[key] for t in _tools(report, tools))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _over_mcp(report: Figures) -> bool:
    return report["transport"]["kind"] == "mcp"


def _failures_of(report: Figures, tools: list[str] | None, kind: str) -> int:
    """Failed attempts of `kind`: the load's own in process; over MCP, the server's, as its
    replies said (what the agents saw of them is in `failures`)."""
    if _over_mcp(report):
        return sum((t["server_failures"] or {}).get(kind, 0) for t in _tools(report, tools))
    return sum(t["failures"].get(kind, 0) for t in _tools(report, tools))


def _attempts(report: Figures, tools: list[str] | None) -> int:
    """Attempts: the load's in process; over MCP, the server's own, as its replies said."""
    if _over_mcp(report):
        return sum(t["server_attempts"] or 0 for t in _tools(report, tools))
    return _total(report, tools, "attempts")


def _success_rate(report: Figures, tools: list[str] | None) -> float | None:
    """Succeeded calls among those the platform had to serve: a tool's own refusal (it answered
    "no", e.g. the account cannot pay) is neither a success nor a failure of the platform."""
    return _ratio(_total(report, tools, "succeeded"), _served(report, tools))


def _served(report: Figures, tools: list[str] | None) -> int:
    """The calls the platform had to serve: all but the tool's own refusals and the calls the run's
    own stop cut off (their outcome unknown, and no doing of the platform's)."""
    return _total(report, tools, "calls") - _total(report, tools, "refused") - _total(report, tools, "cut_off")


# At repeatable read and serializable, PostgreSQL refuses the concurrent update that a version
# check would catch before the check runs (40001): there, the version conflicts are those too.
_BECOMES = {Failure.VERSION_CONFLICT: Failure.SERIALIZATION_FAILURE}
_LEVELS_THAT_REFUSE = ("repeatable_read", "serializable")


def _counted_as(kind: Failure, report: Figures) -> tuple[Failure, ...]:
    becomes = _BECOMES.get(kind)
    if becomes is not None and report["run"]["isolation"] in _LEVELS_THAT_REFUSE:
        return kind, becomes
    return (kind,)


def _percentile_of_tool(key: _ToolPercentile) -> Reader:
    def read(report: Figures, tools: list[str] | None) -> float | None:
        values = [value for t in _tools(report, tools) if (value := t[key]) is not None]
        return max(values) if values else None  # several tools in scope: the slowest must hold

    return read


def _distribution(name: str, statistic: _Statistic) -> Reader:
    def read(report: Figures, tools: list[str] | None) -> float | None:
        summary = report["latency_ms"].get(name)
        return None if summary is None else summary[statistic]

    return read


def _per_attempt(kind: Failure) -> Reader:
    return lambda r, t: _ratio(sum(_failures_of(r, t, k.value) for k in _counted_as(kind, r)), _attempts(r, t))


def _counted(report: Figures, counter: ConflictCounter) -> int:
    """A conflicts counter; over MCP, a kind of failed attempt counts the server's (indeterminate
    calls are the agents' in either)."""
    if counter != "indeterminate" and _over_mcp(report):
        return _failures_of(report, None, counter)
    return report["conflicts"][counter]


def _conflict_count(counter: ConflictCounter) -> Reader:
    return lambda r, t: _counted(r, counter)


def _turn_latency(statistic: _Statistic) -> Reader:
    return lambda r, t: r["turns"]["latency_ms"][statistic]


def _anomaly_count(anomaly: str) -> Reader:
    return lambda r, t: r["anomalies"][anomaly]


METRICS: dict[str, Metric] = {
    **{
        f"tool_{key}": Metric("ms", _percentile_of_tool(key), per_tool=True, scoped=True, over_calls=True)
        for key in _TOOL_PERCENTILES
    },
    "success_rate": Metric("rate", _success_rate, scoped=True, over_calls=True),
    "tool_success_rate": Metric("rate", _success_rate, per_tool=True, scoped=True, over_calls=True),
    "failure_rate": Metric("rate", lambda r, t: _ratio(
        _total(r, t, "failed") - _total(r, t, "refused") + _total(r, t, "indeterminate"), _served(r, t)),
        scoped=True, over_calls=True),
    **{
        f"{kind.value}_per_attempt": Metric("rate", _per_attempt(kind), scoped=True, over_calls=True)
        for kind in Failure
    },
    "deadlocks_per_minute": Metric(
        "per_minute", lambda r, t: _counted(r, "deadlocks") / (r["run"]["duration_s"] / 60.0)
        if r["run"]["duration_s"] else None),
    **{
        f"{name}_{statistic}_ms": Metric("ms", _distribution(name, statistic))
        for name in ("deadlock_detection", "deadlock_resolution", "pool_wait", "queue_wait", "cross_service_window")
        for statistic in _STATISTICS
    },
    **{counter: Metric("count", _conflict_count(counter)) for counter in CONFLICT_COUNTERS},
    # An agent's turn (harness.run.turns): what it waits for, and its calls' conflicts; a run
    # without a finished turn holds none of these but the count.
    **{f"turn_{statistic}_ms": Metric("ms", _turn_latency(statistic), over_calls=True) for statistic in _STATISTICS},
    "turns_with_conflicts_rate": Metric("rate", lambda r, t: _ratio(r["turns"]["with_conflicts"], r["turns"]["turns"]),
                                        over_calls=True),
    "turn_collisions": Metric("count", lambda r, t: r["turns"]["collisions"]),
    **{anomaly: Metric("count", _anomaly_count(anomaly)) for anomaly in ANOMALIES},
    "audit_failed_checks": Metric("count", lambda r, t: sum(not c["ok"] for c in r["audit"]["checks"])),
}


# What a run over MCP cannot observe (the report's transport.mcp.not_measurable names them), and
# the metrics that read each: a rule on one of those fails, "not measurable", never holds.
POOL = "pool"
DEADLOCK_TIMINGS = "deadlock timings"
SERVER_ATTEMPTS = "server attempts"
LOAD_SESSIONS = "load sessions"
_READ_FROM: dict[str, tuple[str, ...]] = {
    POOL: tuple(f"pool_wait_{statistic}_ms" for statistic in _STATISTICS),
    DEADLOCK_TIMINGS: tuple(f"{name}_{statistic}_ms" for name in ("deadlock_detection", "deadlock_resolution")
                            for statistic in _STATISTICS),
    SERVER_ATTEMPTS: (*(f"{kind.value}_per_attempt" for kind in Failure), "deadlocks_per_minute",
                      *(counter for counter in CONFLICT_COUNTERS if counter != "indeterminate")),
}


def not_measurable(report: Figures) -> dict[str, str]:
    """The metrics the run's transport could not observe, each with why."""
    mcp = report["transport"].get("mcp")
    if mcp is None:
        return {}
    return {metric: item["why"] for item in mcp["not_measurable"] for metric in _READ_FROM.get(item["figure"], ())}


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    scope: str | None = None

    def holds(self, observed: float | None) -> bool:
        if observed is None:
            # A rule about an event that never happened (no deadlock to resolve) holds; one about
            # tool calls when there were none does not.
            return not METRICS[self.metric].over_calls
        return _OPS[self.op](observed, self.threshold)


def load_rules(path: Path, scopes: dict[str, list[str]]) -> tuple[Rule, ...]:
    """The rules of a TOML file, checked against the metric catalogue and the run's scopes
    (tool and scenario names, each with its tools); raises BadSlaFile."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadSlaFile(f"--sla {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadSlaFile(f"--sla {path}: not valid TOML: {exc}") from None
    unknown_keys = set(document) - {"rule"}
    if unknown_keys or not isinstance(document.get("rule"), list) or not document["rule"]:
        raise BadSlaFile(f"--sla {path}: expected one or more [[rule]] tables and nothing else")
    return tuple(_rule(path, number, table, scopes) for number, table in enumerate(document["rule"], start=1))


def _rule(path: Path, number: int, table: dict[str, Any], scopes: dict[str, list[str]]) -> Rule:
    where = f"--sla {path}: rule {number}"
    if not isinstance(table, dict):
        raise BadSlaFile(f"{where}: must be a table")
    extra = set(table) - {"metric", "op", "threshold", "scope", "name"}
    if extra:
        raise BadSlaFile(f"{where}: unknown key {', '.join(sorted(extra))}")
    metric, op, threshold, scope = table.get("metric"), table.get("op"), table.get("threshold"), table.get("scope")
    if metric not in METRICS:
        raise BadSlaFile(f"{where}: unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}")
    if op not in _OPS:
        raise BadSlaFile(f"{where}: op {op!r} must be one of {', '.join(_OPS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise BadSlaFile(f"{where}: threshold must be a number, not {threshold!r}")
    kind = METRICS[metric].kind
    if threshold < 0:
        raise BadSlaFile(f"{where}: threshold {threshold} is impossible for {metric} (a {kind} is never negative)")
    if kind == "rate" and threshold > 1:
        raise BadSlaFile(f"{where}: threshold {threshold} is impossible for {metric}, a rate between 0 and 1")
    if scope is not None:
        if not METRICS[metric].scoped:
            raise BadSlaFile(f"{where}: {metric} is for the whole run and takes no scope")
        if scope not in scopes:
            raise BadSlaFile(f"{where}: unknown scope {scope!r}; this run's tools and scenarios: {', '.join(scopes)}")
    name = table.get("name") or f"{metric} {op} {threshold:g}"
    if not isinstance(name, str):
        raise BadSlaFile(f"{where}: name must be a string")
    return Rule(name, metric, op, float(threshold), scope)


def evaluate(rules: tuple[Rule, ...], report: Figures, scopes: dict[str, list[str]]) -> list[SlaResult]:
    """One result per rule, and per tool for an unscoped per-tool rule; a rule whose metric the
    run's transport could not observe fails, saying why."""
    unobserved = not_measurable(report)
    results: list[SlaResult] = []
    for rule in rules:
        metric = METRICS[rule.metric]
        if metric.per_tool and rule.scope is None:
            # No tool called at all: the rule is checked once, over nothing, and fails.
            targets: list[tuple[str | None, list[str] | None]] = [
                (tool, [tool]) for tool in sorted(report["tools"])] or [(None, [])]
        else:
            targets = [(rule.scope, scopes[rule.scope] if rule.scope else None)]
        why = unobserved.get(rule.metric)
        for scope, tools in targets:
            observed = None if why else metric.read(report, tools)
            results.append({
                "name": f"{rule.name} [{scope}]" if scope else rule.name,
                "metric": rule.metric,
                "scope": scope,
                "op": rule.op,
                "threshold": rule.threshold,
                "observed": observed,
                "ok": not why and rule.holds(observed),
                "not_measurable": why,
            })
    return results
