"""Per-process counters and latency distributions, in a form that merges exactly.

A distributed run has one `Metrics` per worker; the master adds them up. Distributions are
histograms with fixed buckets, so the merged percentiles are those of all the calls together,
never an average of percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

from db.audits import Acknowledged
from db.errors import Failure
from db.op_ids import OpIds
from harness.report_shape import ConflictCounter, PoolAtRest, PoolSample
from harness.watch.histogram import Histogram
from harness.watch.turn_stats import TurnFigures, TurnStats
from harness.watch.workflow_stats import WorkflowStats, is_write_from_read
from transport.call_record import CallRecord, Outcome

__all__ = ["ToolStats", "Metrics", "CONFLICT_COUNTERS", "TRANSPORT_COUNTS"]

# The report's conflict counters: one per kind of failed attempt, plus the calls whose outcome
# is unknown. "errors" (bugs, constraint violations) are reported apart, as evidence problems;
# "refusals" (a tool's business "no") are counted per tool with the calls' outcomes. Named once
# in the report's types; the failures db.errors counts as conflicts must be the same.
CONFLICT_COUNTERS: tuple[ConflictCounter, ...] = get_args(ConflictCounter)
assert CONFLICT_COUNTERS == tuple(f.value for f in Failure if f.counted_as_conflict) + ("indeterminate",)


@dataclass
class ToolStats:
    calls: int = 0  # calls that finished: succeeded + failed + indeterminate + cut_off
    succeeded: int = 0
    failed: int = 0
    refused: int = 0  # of the failed: the tool's own "no" (Refused), the platform did its job
    indeterminate: int = 0  # the platform left the outcome unknown (a connection or a reply lost)
    cut_off: int = 0  # the run's own stop left it unknown (transport.call_record.CallRecord.cut_off)
    interrupted: int = 0  # stopped with the run before COMMIT: rolled back, not counted as calls
    attempts: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts, by kind
    latency: Histogram = field(default_factory=Histogram)
    # Over MCP, what the tool server's replies said of its own attempts (transport.call_record).
    server_attempts: int = 0
    server_failures: dict[str, int] = field(default_factory=dict)

    _COUNTS = ("calls", "succeeded", "failed", "refused", "indeterminate", "cut_off", "interrupted", "attempts",
               "retries", "server_attempts")

    def merge(self, other: ToolStats) -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _add(self.failures, other.failures)
        _add(self.server_failures, other.server_failures)
        self.latency.merge(other.latency)

    def to_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self._COUNTS}, "failures": dict(self.failures),
                "server_failures": dict(self.server_failures), "latency": self.latency.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolStats:
        stats = cls(**{name: data[name] for name in cls._COUNTS}, failures=dict(data["failures"]),
                    server_failures=dict(data["server_failures"]))
        stats.latency = Histogram.from_dict(data["latency"])
        return stats


_DISTRIBUTIONS = ("pool_wait", "deadlock_detection", "deadlock_resolution")
# What the MCP transport counts besides the calls (sums over the calls, and each load process's
# client's own counts, added when its load stops); 0 for calls that ran in process.
TRANSPORT_COUNTS = ("reissues", "is_error_replies", "calls_server_reported", "sessions_opened", "sessions_renewed",
                    "sessions_closed", "json_replies", "event_stream_replies")
_OUTCOMES = ("succeeded", "failed", "indeterminate", "rejected")
_ERROR_SAMPLES = 5


class Metrics:
    """Everything one process recorded about its tool calls; with a load shape, also per stage
    (`stages`, without the operation ids, which only the audits need)."""

    def __init__(self, keep_op_ids: bool = True) -> None:
        self._keep_op_ids = keep_op_ids
        self.stages: dict[int, Metrics] = {}
        self.tools: dict[str, ToolStats] = {}
        self.conflicts: dict[str, int] = dict.fromkeys(CONFLICT_COUNTERS, 0)
        self.errors = 0
        self.error_samples: list[str] = []  # the first few errors' exceptions, for the report
        self.distributions: dict[str, Histogram] = {name: Histogram() for name in _DISTRIBUTIONS}
        # Each attempt that reached its server, by (system, SQLSTATE, failure kind): what monitoring
        # exports as db.client.operation.duration and mcp.client.operation.duration.
        self.operations: dict[tuple[str, str, str], Histogram] = {}
        # Every call's id by tool and outcome (succeeded, failed, indeterminate, rejected: the
        # failed ones a full queue refused), 16 bytes an id: what the audits compare.
        self.op_ids: dict[str, dict[str, OpIds]] = {}
        # What each process saw when its load stopped (its pool's state), and its pool samples.
        self.findings: list[PoolAtRest] = []
        self.pool_samples: list[PoolSample] = []
        # Each second, each load process's running totals since its test started ({t, process,
        # calls, attempts, conflicts, pool_waiting}): the web UI's charts over time.
        self.load_samples: list[dict[str, Any]] = []
        # Evidence the run cannot be judged on: a load process that could not start ({process,
        # kind, detail}), and agents whose task raised (a harness bug, not a tool failure).
        self.load_failures: list[dict[str, Any]] = []
        self.agent_errors = 0
        self.agent_error_samples: list[str] = []  # the first few, for the report
        self.transport: dict[str, int] = dict.fromkeys(TRANSPORT_COUNTS, 0)
        self.turns = TurnStats()
        self.workflows = WorkflowStats()

    def record_turn(self, turn: TurnFigures) -> None:
        """An agent's finished turn (harness.run.turns)."""
        self.turns.record(turn)

    def record_agent_error(self, exception: BaseException) -> None:
        """The `user_error` listener: an agent's task raised instead of finishing its call."""
        self.agent_errors += 1
        _sample(self.agent_error_samples, exception)

    def acknowledged(self, tools: set[str]) -> Acknowledged:
        """What the agents were told about the calls of `tools`."""
        by_outcome: dict[str, OpIds] = {outcome: OpIds() for outcome in _OUTCOMES}
        for tool in tools:
            for outcome, op_ids in self.op_ids.get(tool, {}).items():
                by_outcome[outcome].extend(op_ids)
        return Acknowledged(**by_outcome)

    def _keep(self, record: CallRecord, outcome: str) -> None:
        if self._keep_op_ids:
            kept = self.op_ids.setdefault(record.tool, {})
            op_ids = kept.get(outcome)
            if op_ids is None:
                op_ids = kept[outcome] = OpIds()
            op_ids.add(record.op_id, record.value)

    def stage(self, index: int) -> Metrics:
        stage = self.stages.get(index)
        if stage is None:
            stage = self.stages[index] = Metrics(keep_op_ids=False)
        return stage

    def observe(self, name: str, seconds: float) -> None:
        self._histogram(name).record(seconds)

    def _histogram(self, name: str) -> Histogram:
        histogram = self.distributions.get(name)
        if histogram is None:
            histogram = self.distributions[name] = Histogram()
        return histogram

    def record(self, record: CallRecord, waits: str = "pool_wait") -> None:
        """The `call_finished` listener: one call's record into the counters. `waits`: the
        distribution its waits for a connection go to (over MCP, the client's HTTP connections:
        not the pool's)."""
        stats = self.tools.get(record.tool)
        if stats is None:
            stats = self.tools[record.tool] = ToolStats()
        if record.server_attempts or record.server_failures or record.reissues or record.is_error_replies:  # MCP's
            self._record_server_side(record, stats)
        for failure in record.failures:
            stats.failures[failure.value] = stats.failures.get(failure.value, 0) + 1
            if failure is Failure.ERROR:
                self.errors += 1
                _sample(self.error_samples, record.exception)
            elif failure.counted_as_conflict:
                self.conflicts[failure.value] += 1
        for wait in record.pool_waits_s:
            self._histogram(waits).record(wait)
        for system, seconds, status, failure_kind in record.operations:
            key = (system, status, failure_kind)
            histogram = self.operations.get(key)
            if histogram is None:
                histogram = self.operations[key] = Histogram()
            histogram.record(seconds)
        for detection in record.deadlock_detections_s:
            self.distributions["deadlock_detection"].record(detection)
        stats.attempts += record.attempts
        if record.outcome is Outcome.INTERRUPTED:
            stats.interrupted += 1
            self._keep(record, "failed")  # rolled back before COMMIT was sent
            return
        stats.calls += 1
        stats.retries += record.retries
        if record.deadlock_resolution_s is not None:  # resolved, or held up until the call gave up
            self.distributions["deadlock_resolution"].record(record.deadlock_resolution_s)
        stats.latency.record(record.duration_s)
        if record.outcome is Outcome.SUCCEEDED:
            stats.succeeded += 1
            self._keep(record, "succeeded")
            if is_write_from_read(record.value):
                self.workflows.record(record.tool, record.value)
            for name, seconds in record.observations:
                self._histogram(name).record(seconds)
        elif record.outcome is Outcome.INDETERMINATE:
            if record.cut_off:
                stats.cut_off += 1
            else:
                stats.indeterminate += 1
                self.conflicts["indeterminate"] += 1
            self._keep(record, "indeterminate")  # the audits allow either, whoever left it unknown
        else:
            stats.failed += 1
            self._keep(record, "failed")
            last = record.failures[-1] if record.failures else None
            if last is not None and last.refusal:
                stats.refused += 1
            if last is Failure.QUEUE_REJECTED:
                self._keep(record, "rejected")

    def _record_server_side(self, record: CallRecord, stats: ToolStats) -> None:
        stats.server_attempts += record.server_attempts
        for failure in record.server_failures:
            stats.server_failures[failure.value] = stats.server_failures.get(failure.value, 0) + 1
        self.transport["reissues"] += record.reissues
        self.transport["is_error_replies"] += record.is_error_replies
        self.transport["calls_server_reported"] += record.server_attempts > 0

    def count_transport(self, counts: dict[str, int]) -> None:
        """A load process's MCP client's own counts (sessions, replies), added when its load stops."""
        _add(self.transport, counts)

    def merge(self, other: Metrics) -> None:
        for name, stats in other.tools.items():
            self.tools.setdefault(name, ToolStats()).merge(stats)
        for name, count in other.conflicts.items():
            self.conflicts[name] = self.conflicts.get(name, 0) + count
        self.errors += other.errors
        _merge_samples(self.error_samples, other.error_samples)
        for name, histogram in other.distributions.items():
            self._histogram(name).merge(histogram)
        for key, histogram in other.operations.items():
            self.operations.setdefault(key, Histogram()).merge(histogram)
        for tool, by_outcome in other.op_ids.items():
            mine = self.op_ids.setdefault(tool, {})
            for outcome, op_ids in by_outcome.items():
                mine.setdefault(outcome, OpIds()).extend(op_ids)
        self.findings.extend(other.findings)
        self.pool_samples.extend(other.pool_samples)
        self.load_samples.extend(other.load_samples)
        self.load_failures.extend(other.load_failures)
        self.agent_errors += other.agent_errors
        _merge_samples(self.agent_error_samples, other.agent_error_samples)
        _add(self.transport, other.transport)
        self.turns.merge(other.turns)
        self.workflows.merge(other.workflows)
        for index, stage in other.stages.items():
            self.stage(index).merge(stage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": {name: stats.to_dict() for name, stats in self.tools.items()},
            "conflicts": dict(self.conflicts),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "distributions": {name: h.to_dict() for name, h in self.distributions.items()},
            # Keys as text: they cross Locust's msgpack messages.
            "operations": {"|".join(key): h.to_dict() for key, h in self.operations.items()},
            "op_ids": {tool: {outcome: op_ids.to_wire() for outcome, op_ids in by_outcome.items()}
                       for tool, by_outcome in self.op_ids.items()},
            "findings": self.findings,
            "pool_samples": self.pool_samples,
            "load_samples": self.load_samples,
            "load_failures": self.load_failures,
            "agent_errors": self.agent_errors,
            "agent_error_samples": self.agent_error_samples,
            "transport": dict(self.transport),
            "turns": self.turns.to_dict(),
            "workflows": self.workflows.to_dict(),
            "stages": {str(index): stage.to_dict() for index, stage in self.stages.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], keep_op_ids: bool = True) -> Metrics:
        metrics = cls(keep_op_ids)
        metrics.tools = {name: ToolStats.from_dict(stats) for name, stats in data["tools"].items()}
        metrics.conflicts.update(data["conflicts"])
        metrics.errors = data["errors"]
        metrics.error_samples = list(data["error_samples"])
        for name, histogram in data["distributions"].items():
            metrics.distributions[name] = Histogram.from_dict(histogram)
        metrics.operations = {_operation(key): Histogram.from_dict(h) for key, h in data["operations"].items()}
        metrics.op_ids = {tool: {outcome: OpIds.from_wire(wire) for outcome, wire in by_outcome.items()}
                          for tool, by_outcome in data["op_ids"].items()}
        metrics.findings = list(data["findings"])
        metrics.pool_samples = list(data["pool_samples"])
        metrics.load_samples = list(data["load_samples"])
        metrics.load_failures = list(data["load_failures"])
        metrics.agent_errors = data["agent_errors"]
        metrics.agent_error_samples = list(data["agent_error_samples"])
        metrics.transport.update(data["transport"])
        metrics.turns = TurnStats.from_dict(data["turns"])
        metrics.workflows = WorkflowStats.from_dict(data["workflows"])
        metrics.stages = {int(index): cls.from_dict(stage, keep_op_ids=False)
                          for index, stage in data["stages"].items()}
        return metrics


def _operation(text: str) -> tuple[str, str, str]:
    system, status, failure_kind = text.split("|")
    return system, status, failure_kind


def _sample(samples: list[str], exception: BaseException | None) -> None:
    if len(samples) < _ERROR_SAMPLES:
        samples.append(f"{type(exception).__name__}: {exception}".splitlines()[0])


def _add(counts: dict[str, int], more: dict[str, int]) -> None:
    for name, count in more.items():
        counts[name] = counts.get(name, 0) + count


def _merge_samples(samples: list[str], others: list[str]) -> None:
    samples.extend(others[:max(0, _ERROR_SAMPLES - len(samples))])
