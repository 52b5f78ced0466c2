"""The workflows' writes as one process counted them from their values (tasks/workflows.py: each
write says how stale its read was), in a form that merges exactly across workers; the report's
`workflows`. A write is from a stale read when the data had moved since: versions written
meanwhile (`behind` > 0), or, where the data has no versions (the queue), its `stale` flag."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.report_shape import VersionsBehind, WorkflowFigures, Workflows
from harness.watch.histogram import Histogram

__all__ = ["WorkflowStats", "is_write_from_read", "ran_workflows"]


def is_write_from_read(value: Any) -> bool:
    """Whether a call's value is a workflow write's: it says how long after its read it wrote."""
    return isinstance(value, dict) and "stale_ms" in value


def ran_workflows(report: Mapping[str, Any]) -> bool:
    """Whether the report's run had workflows, so its `workflows` is worth showing (the summary,
    the HTML report, the web UI): the scenario ran, even without a write, or a tool wrote from a read."""
    return bool(report["workflows"]["tools"]) or "workflows" in report["run"]["scenarios"]


@dataclass
class _ToolWrites:
    writes: int = 0
    stale_writes: int = 0
    behind: dict[int, int] = field(default_factory=dict)  # versions behind -> writes; empty: no versions
    stale_ms: Histogram = field(default_factory=Histogram)

    def record(self, value: dict[str, Any]) -> None:
        self.writes += 1
        behind = value.get("behind")
        if behind is not None:
            self.behind[behind] = self.behind.get(behind, 0) + 1
        self.stale_writes += bool(behind) if behind is not None else bool(value.get("stale"))
        if value["stale_ms"] is not None:
            self.stale_ms.record(value["stale_ms"] / 1000.0)

    def merge(self, other: _ToolWrites) -> None:
        self.writes += other.writes
        self.stale_writes += other.stale_writes
        for behind, writes in other.behind.items():
            self.behind[behind] = self.behind.get(behind, 0) + writes
        self.stale_ms.merge(other.stale_ms)

    def figures(self) -> WorkflowFigures:
        return {"writes": self.writes, "stale_writes": self.stale_writes, "behind_versions": _spread(self.behind),
                "stale_ms": self.stale_ms.summary_ms()}

    def to_dict(self) -> dict[str, Any]:
        return {"writes": self.writes, "stale_writes": self.stale_writes,
                "behind": {str(k): v for k, v in self.behind.items()}, "stale_ms": self.stale_ms.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _ToolWrites:
        return cls(data["writes"], data["stale_writes"], {int(k): v for k, v in data["behind"].items()},
                   Histogram.from_dict(data["stale_ms"]))


def _spread(counts: dict[int, int]) -> VersionsBehind | None:
    """Nearest-rank percentiles of the versions behind, exact; None (n/a) when no write said any."""
    total = sum(counts.values())
    if not total:
        return None

    def percentile(percent: float) -> int:
        rank, seen = max(1, math.ceil(percent / 100.0 * total)), 0
        for behind in sorted(counts):
            seen += counts[behind]
            if seen >= rank:
                return behind
        raise AssertionError("unreachable: rank is at most the total")

    return {"p50": percentile(50), "p95": percentile(95), "p99": percentile(99), "max": max(counts), "count": total}


class WorkflowStats:
    """The succeeded writes of workflows, by tool."""

    def __init__(self) -> None:
        self.tools: dict[str, _ToolWrites] = {}

    def record(self, tool: str, value: dict[str, Any]) -> None:
        writes = self.tools.get(tool)
        if writes is None:
            writes = self.tools[tool] = _ToolWrites()
        writes.record(value)

    def merge(self, other: WorkflowStats) -> None:
        for tool, writes in other.tools.items():
            self.tools.setdefault(tool, _ToolWrites()).merge(writes)

    def section(self) -> Workflows:
        """The report's `workflows`: the totals, and each write tool's figures."""
        total = _ToolWrites()
        for writes in self.tools.values():
            total.merge(writes)
        return {**total.figures(), "tools": {tool: self.tools[tool].figures() for tool in sorted(self.tools)}}

    def to_dict(self) -> dict[str, Any]:
        return {tool: writes.to_dict() for tool, writes in self.tools.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowStats:
        stats = cls()
        stats.tools = {tool: _ToolWrites.from_dict(writes) for tool, writes in data.items()}
        return stats
