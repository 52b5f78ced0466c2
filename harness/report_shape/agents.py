"""The agents' turns, and the writes their workflows made from earlier reads."""

from typing_extensions import TypedDict

from harness.report_shape.calls import Distribution

__all__ = ["Turns", "VersionsBehind", "WorkflowFigures", "Workflows"]


class Turns(TypedDict):
    """The agents' turns (harness.run.turns): each a batch of calls run at once. Turns their agent
    was stopped in are not counted."""

    turns: int
    calls: int  # the calls of those turns
    calls_per_turn: dict[str, int]  # calls -> turns
    latency_ms: Distribution  # from a batch's start to its last call's end
    with_conflicts: int  # turns a call of which met a failed attempt of a conflict kind
    same_key_pairs: int  # later calls that took an earlier call's key (--same-key)
    overlapping_same_key_pairs: int  # pairs of a turn's calls that shared a key and overlapped in time
    collisions: int  # of those, the pairs at least one of whose calls met a conflict


class VersionsBehind(TypedDict):
    """How many versions behind the data the reads of writes were (0: current), exactly."""

    p50: int
    p95: int
    p99: int
    max: int
    count: int


class WorkflowFigures(TypedDict):
    """The succeeded writes of workflows (tasks/workflows.py), each from its agent's earlier read."""

    writes: int
    stale_writes: int  # the data had moved since the read: versions written meanwhile, or the job gone
    behind_versions: VersionsBehind | None  # None (n/a): no write of these says versions (the queue's)
    stale_ms: Distribution  # from the read to the write, the server's clock; reads of a time not known left out


class Workflows(WorkflowFigures):
    """The workflows' writes in all, and by write tool (docs/agents.md: Workflows across turns)."""

    tools: dict[str, WorkflowFigures]
