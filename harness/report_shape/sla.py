"""What SLA rules read (a whole run's figures, or one stage's), what they found, and a load
shape's stages."""

from typing_extensions import ReadOnly, TypedDict

from harness.report_shape.agents import Turns
from harness.report_shape.calls import Conflicts, Distribution, ToolFigures
from harness.report_shape.run import RunPace
from harness.report_shape.transport import Transport
from harness.report_shape.verdict import Audit

__all__ = ["Figures", "SlaResult", "Stage", "StageSla"]


class Figures(TypedDict):
    """What SLA rules read (harness.config.sla): a whole run's report, or one stage's figures."""

    run: ReadOnly[RunPace]
    transport: ReadOnly[Transport]
    tools: dict[str, ToolFigures]
    conflicts: Conflicts
    latency_ms: dict[str, Distribution]
    turns: Turns
    anomalies: dict[str, int]
    audit: Audit


class SlaResult(TypedDict):
    name: str
    metric: str
    scope: str | None
    op: str
    threshold: float
    observed: float | None
    ok: bool
    not_measurable: str | None  # why this transport cannot observe the rule's metric (it then fails)


class StageSla(TypedDict):
    name: str
    observed: float | None
    ok: bool


class Stage(TypedDict):
    """One stage of a load shape (--shape)."""

    stage: int
    agents: int
    duration_s: float
    calls: int
    throughput_per_s: float
    p95_ms: float | None
    conflict_rate: float | None
    pool_wait_p95_ms: float | None
    turns: int  # the stage's finished turns
    turn_p95_ms: float | None  # what turn_p95_ms rules read over the stage
    turns_with_conflicts: int  # over `turns`: what turns_with_conflicts_rate rules read
    sla_ok: bool
    sla: list[StageSla]
