"""Service-level rules and their evaluation against a run's report."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Rule", "DEFAULT_RULES", "evaluate"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _all_tools_total(report: dict[str, Any], key: str) -> int:
    return sum(tool[key] for tool in report["tools"].values())


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# Each metric reads one figure from the report; `scope` names a tool where the metric is per tool.
_METRICS: dict[str, Callable[[dict[str, Any], str | None], float | None]] = {
    "deadlock_resolution_p95_ms": lambda r, _: r["latency_ms"]["deadlock_resolution"]["p95"],
    "version_conflict_rate": lambda r, _: _ratio(
        r["conflicts"]["version_conflicts"], _all_tools_total(r, "attempts")
    ),
    "success_rate": lambda r, _: _ratio(_all_tools_total(r, "succeeded"), _all_tools_total(r, "calls")),
    "tool_p95_ms": lambda r, tool: r["tools"][tool]["p95_ms"],
}

_PER_TOOL = frozenset({"tool_p95_ms"})


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    scope: str | None = None  # a tool name, for per-tool metrics; None = every tool

    def holds(self, observed: float | None) -> bool:
        # A rule about something that never happened (no deadlock to resolve) holds.
        return observed is None or _OPS[self.op](observed, self.threshold)


# The product brief's SLAs, used when the user gives none.
DEFAULT_RULES = (
    Rule("deadlock resolution p95 < 500 ms", "deadlock_resolution_p95_ms", "<", 500),
    Rule("version conflicts < 20% of attempts", "version_conflict_rate", "<", 0.20),
    Rule("success rate after retries > 95%", "success_rate", ">", 0.95),
    Rule("tool p95 < 2 s", "tool_p95_ms", "<", 2000),
)


def evaluate(rules: tuple[Rule, ...], report: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per rule, and per tool for a per-tool rule without a scope."""
    results = []
    for rule in rules:
        if rule.metric in _PER_TOOL and rule.scope is None:
            scopes: list[str | None] = sorted(report["tools"])
        else:
            scopes = [rule.scope]
        for scope in scopes:
            observed = _METRICS[rule.metric](report, scope)
            results.append(
                {
                    "name": f"{rule.name} [{scope}]" if scope else rule.name,
                    "metric": rule.metric,
                    "scope": scope,
                    "op": rule.op,
                    "threshold": rule.threshold,
                    "observed": observed,
                    "ok": rule.holds(observed),
                }
            )
    return results
