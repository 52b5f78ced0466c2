"""The run's own sections: what ran and at what pace, its settings, the data seeded before it, the
faults injected."""

from typing_extensions import NotRequired, TypedDict

__all__ = ["Baseline", "Fault", "Run", "RunPace", "RunSettings"]


class RunPace(TypedDict):
    """What an SLA rule reads of the run (harness.config.sla); a load shape's stage has no more."""

    isolation: str
    duration_s: float


class Run(RunPace):
    run_id: str
    started_at: str  # UTC, ISO 8601
    scenarios: list[str]
    schema: str
    agents: int  # the most that ran at once
    seed: int
    settings_fingerprint: str


class Baseline(TypedDict):
    accounts: int
    initial_balance: int
    counters: int
    teams: int
    queue_capacity: int


class Fault(TypedDict):
    kind: str  # pg-kill, redis-kill, worker-stop, mcp-kill
    at_s: float
    targets: int
    hit: int
    worker: NotRequired[str]  # worker-stop's
    down_s: NotRequired[float]  # mcp-kill's: from the kill until the tool server answered again


class RunSettings(TypedDict):
    """The test's per-run settings (harness.config.run_settings.settings_summary)."""

    scenarios: list[str]
    tools: list[list[str | int]]  # [name, weight]
    tools_module_sha256: str | None
    schema: str
    isolation: str
    accounts: int
    counters: int
    teams: int
    consistency_model: str  # list_append's, as given ("": the one the level promises)
    queue_capacity: int
    hold_time_ms: float
    # A constant's ms; a distribution as given (e.g. "lognormal:2s:10s").
    tool_work_ms: float | str
    think_time_ms: float | str
    calls_per_turn: str
    same_key: float
    trace: str | None  # --trace's path, as given
    trace_sha256: str | None
    writes: str  # a workflow's write from its read: blind or guarded
    pool_size: int | None
    pool_timeout_s: float
    max_tries: int
    backoff_base_ms: float
    backoff_max_ms: float
    deadlock_timeout_ms: int | None
    lock_timeout_ms: int
    seed: int | None
    chaos: list[list[str | float]]  # [kind, every_s, share]
