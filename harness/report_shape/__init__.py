"""The report's shape: one TypedDict per section, as `--report-json` writes it (docs/report.md
describes every key; a change to these types is a change of REPORT_VERSION there). Here the whole
(`Report`, and an --isolation-matrix run's `MatrixFile`, which holds one per level) and every
section's type by name; the sections, in modules by concept: run, calls, agents, transport,
servers, hub, verdict, sla, distributed.

Types only, and a layer of its own below every part of the harness that makes or reads a section
of the report (tests/test_layers.py). tests/test_report_shape.py checks a real report against
them, key by key: a key these types do not declare, or one they require and a report lacks,
fails it.

No `from __future__ import annotations` in any of its modules: the TypedDicts' required and
optional keys are read at run time from their evaluated annotations (NotRequired), which
postponed ones hide. typing_extensions for NotRequired on Python 3.10 and ReadOnly before 3.13.
"""

from typing_extensions import NotRequired, TypedDict

from harness.report_shape.agents import Turns, VersionsBehind, WorkflowFigures, Workflows
from harness.report_shape.calls import ConflictCounter, Conflicts, Distribution, ToolFigures
from harness.report_shape.capacity import Capacity, CapacityFile, CapacityProbe, ProbeRun, UslModel
from harness.report_shape.distributed import LostWorker, Workers, WorkerTotals
from harness.report_shape.hub import EventLoopLag, HeartbeatGap, Heartbeats, Hub, SamplerSchedule
from harness.report_shape.run import Baseline, Fault, Run, RunPace, RunSettings
from harness.report_shape.servers import (
    DeadlockTimeout,
    Pool,
    PoolAtRest,
    PoolSample,
    ServerCounters,
    ServerDescription,
    TimeseriesRow,
)
from harness.report_shape.sla import Figures, SlaResult, Stage, StageSla
from harness.report_shape.transport import McpAttempts, McpReplies, McpSessions, McpTransport, NotMeasurable, Transport
from harness.report_shape.verdict import Audit, CheckResult, Evidence, Finding, HistoryCheck, HistoryCheckStats, Verdict

__all__ = [
    "REPORT_VERSION", "Audit", "Baseline", "Capacity", "CapacityFile", "CapacityProbe", "CheckResult",
    "ConflictCounter", "Conflicts", "DeadlockTimeout", "Distribution", "EventLoopLag", "Evidence", "Fault", "Figures",
    "Finding", "HeartbeatGap", "Heartbeats", "HistoryCheck", "HistoryCheckStats", "Hub", "LostWorker", "MatrixFile",
    "MatrixRow", "McpAttempts", "McpReplies", "McpSessions", "McpTransport", "Measured", "NotMeasurable", "Pool",
    "PoolAtRest", "PoolSample", "ProbeRun", "Report", "Run", "RunPace", "RunSettings", "SamplerSchedule",
    "ServerCounters", "ServerDescription", "SlaResult", "Stage", "StageSla", "TimeseriesRow", "ToolFigures",
    "Transport", "Turns", "UslModel", "Verdict", "VersionsBehind", "WorkerTotals", "Workers", "WorkflowFigures",
    "Workflows",
]

# The report's first key. Bumped by any change a reader of the JSON would notice (a key added,
# renamed or removed, a value of another kind), with a line in docs/report.md's "Versions".
REPORT_VERSION = 7


class Measured(TypedDict):
    """The report's first part (harness.verdict.report.build_report): what the agents recorded,
    what the servers counted, and the audits."""

    report_version: int
    run: Run
    servers: list[ServerDescription]
    transport: Transport
    tools: dict[str, ToolFigures]
    conflicts: Conflicts
    errors: int
    latency_ms: dict[str, Distribution]  # by distribution; a user's tool may add its own
    turns: Turns
    workflows: Workflows
    server_counters: ServerCounters
    anomalies: dict[str, int]  # db.audits.ANOMALIES, each 0 when none was seen; a user's audit may add its own
    audit: Audit
    # A run with list_append: its history checked as Elle checks it (tasks/list_append_audit.py).
    history_check: NotRequired[HistoryCheck]
    pool: Pool
    timeseries: list[TimeseriesRow]


class Report(Measured):
    """The whole report (harness.verdict.coordinator.Coordinator.finish)."""

    baseline: Baseline
    not_audited_by_identity: list[str]
    faults: list[Fault]
    hub: Hub
    settings: RunSettings
    workers: NotRequired[Workers]  # a distributed run's
    evidence: Evidence
    sla: list[SlaResult]
    stages: NotRequired[list[Stage]]  # with --shape, or a capacity probe's (its warm-up, then its steps)
    probe: NotRequired[ProbeRun]  # a capacity probe's own run
    verdict: Verdict
    exit_code: int


class MatrixRow(TypedDict):
    level: str
    report: Report


class MatrixFile(TypedDict):
    """--report-json of an --isolation-matrix run."""

    matrix: list[MatrixRow]
    must_pass: list[str]
    failed: list[str]
    exit_code: int
