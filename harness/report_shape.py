"""The report's shape: one TypedDict per section, as `--report-json` writes it (docs/report.md
describes every key; a change to these types is a change of REPORT_VERSION there).

Types only, and a layer of its own below every part of the harness that makes or reads a section
of the report (tests/test_layers.py). tests/test_report_shape.py checks a real report against
them, key by key: a key these types do not declare, or one they require and a report lacks,
fails it.

No `from __future__ import annotations` here: the TypedDicts' required and optional keys are
read at run time from their evaluated annotations (NotRequired), which postponed ones hide.
typing_extensions for NotRequired on Python 3.10 and ReadOnly before 3.13.
"""

from typing import Any, Literal

from typing_extensions import NotRequired, ReadOnly, TypedDict

__all__ = [
    "REPORT_VERSION", "Audit", "Baseline", "CheckResult", "ConflictCounter", "Conflicts", "DeadlockTimeout",
    "Distribution", "EventLoopLag", "Evidence", "Fault", "Figures", "Finding", "HeartbeatGap", "Heartbeats", "Hub",
    "LostWorker", "MatrixFile", "MatrixRow", "McpAttempts", "McpReplies", "McpSessions", "McpTransport", "Measured",
    "NotMeasurable", "Pool", "PoolAtRest", "PoolSample", "Report", "Run", "RunPace", "RunSettings", "SamplerSchedule",
    "ServerCounters", "ServerDescription", "SlaResult", "Stage", "StageSla", "TimeseriesRow", "ToolFigures",
    "Transport", "Turns", "Verdict", "VersionsBehind", "WorkerTotals", "Workers", "WorkflowFigures", "Workflows",
]

# The report's first key. Bumped by any change a reader of the JSON would notice (a key added,
# renamed or removed, a value of another kind), with a line in docs/report.md's "Versions".
REPORT_VERSION = 5

Verdict = Literal["pass", "fail"]


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


class ServerDescription(TypedDict):
    kind: str  # PostgreSQL, Redis
    version: str
    where: str
    origin: str  # the option that named it, or embedded
    description: str  # the line the summary prints


class ToolFigures(TypedDict):
    calls: int
    succeeded: int
    failed: int
    refused: int
    indeterminate: int
    interrupted: int
    attempts: int
    retries: int
    failures: dict[str, int]  # failed attempts by kind (db.errors.Failure's values)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    # Over MCP, the tool server's own attempts and failed attempts by kind, as its replies said;
    # None when the calls ran in process.
    server_attempts: int | None
    server_failures: dict[str, int] | None


# Conflicts' keys, for code that picks one by name (harness.watch.metrics.CONFLICT_COUNTERS).
ConflictCounter = Literal[
    "deadlocks", "serialization_failures", "version_conflicts", "lock_timeouts", "pool_timeouts", "queue_rejections",
    "redis_watch_conflicts", "connection_errors", "indeterminate",
]


class Conflicts(TypedDict):
    """Failed attempts by cause; `indeterminate` counts calls."""

    deadlocks: int
    serialization_failures: int
    version_conflicts: int
    lock_timeouts: int
    pool_timeouts: int
    queue_rejections: int
    redis_watch_conflicts: int
    connection_errors: int
    indeterminate: int


class Distribution(TypedDict):
    """One of `latency_ms`, in milliseconds; None when nothing was recorded."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    count: int


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


class DeadlockTimeout(TypedDict):
    requested_ms: int | None
    applied: bool
    effective: str  # as PostgreSQL shows it, e.g. "1s"
    note: str


class ServerCounters(TypedDict):
    """What the servers counted over the run: pg_stat_database's deltas, and the samples' peaks."""

    deadlocks: int
    xact_commit: int
    xact_rollback: int
    conflicts: int
    deadlock_timeout: DeadlockTimeout
    load_sessions_left: int | None  # None: not the harness's to see (a user's MCP server's sessions)
    peak_lock_waiters: int
    longest_lock_wait_ms: float
    longest_blocking_chain: int
    peak_redis_clients: int
    peak_redis_ops_per_sec: int
    redis_rejected_connections: int
    samples: int


class CheckResult(TypedDict):
    """One audit check (db.audits.Check)."""

    name: str
    ok: bool
    expected: Any  # whatever the check compares: a number, a list of ids, a mapping
    observed: Any
    detail: str
    anomaly: str | None  # the anomaly it counts, e.g. "lost_updates"
    anomaly_count: int


class Audit(TypedDict):
    ok: bool
    checks: list[CheckResult]


class PoolSample(TypedDict):
    t: float
    process: int
    size: int
    available: int
    waiting: int


class PoolAtRest(TypedDict):
    """One load process's pool when its load stopped."""

    process: int
    size: int
    connections: int
    available: int
    idle_in_transaction: int | None  # None: no connection could ask
    calls_in_flight: int


class Pool(TypedDict):
    peak_waiting: int | None  # None: no pool sample (over MCP the pool is the tool server's)
    min_available: int | None
    at_rest: list[PoolAtRest]
    samples: list[PoolSample]


class TimeseriesRow(TypedDict):
    """One sample of the servers (harness.watch.sampler), counters since the run's start."""

    t_s: float
    agents: int
    pg_deadlocks: int
    pg_xact_commit: int
    pg_xact_rollback: int
    pg_conflicts: int
    pg_lock_waiters: int
    pg_longest_lock_wait_ms: float
    pg_longest_blocking_chain: int
    redis_connected_clients: int
    redis_ops_per_sec: int
    redis_rejected_connections: int
    sampler_late_s: float
    queue_depth: NotRequired[int]  # the queue scenario's
    outbox_relayed: NotRequired[int]  # the cross_service scenario's


class McpSessions(TypedDict):
    opened: int
    renewed: int  # a request found its session ended (404), and it was opened again
    closed: int  # DELETEd


class McpReplies(TypedDict):
    json: int
    event_stream: int


class McpAttempts(TypedDict):
    client: int  # the tools/call requests the agents sent
    server: int | None  # the server's own attempts, as its replies said; None: they said none


class NotMeasurable(TypedDict):
    """A figure this transport cannot observe; SLA rules that read it fail (harness.config.sla)."""

    figure: str
    why: str


class McpTransport(TypedDict):
    url: str  # its user information and query values as ***
    server: Literal["builtin", "careless", "user"]  # started by toolclash (--mcp-server), or --mcp-url
    era: str  # session or stateless
    protocol_version: str
    server_info: dict[str, Any]  # the server's serverInfo (name, version, …)
    sessions: McpSessions
    replies: McpReplies
    is_error_replies: int
    reissues: int  # requests sent again with the same op id after a lost reply or an ended session
    attempts: McpAttempts
    calls_server_reported: int  # calls whose replies said the server's attempts
    server_failures: dict[str, int]  # the server's failed attempts by kind, as its replies said
    not_measurable: list[NotMeasurable]


class Transport(TypedDict):
    """How the agents' calls reached their tools: in their own processes, or over MCP."""

    kind: Literal["in_process", "mcp"]
    mcp: NotRequired[McpTransport]  # over MCP


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
    pool: Pool
    timeseries: list[TimeseriesRow]


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


class EventLoopLag(TypedDict):
    wakeups: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    max_at_s: float | None


class SamplerSchedule(TypedDict):
    asked_interval_s: float
    samples: int
    actual_interval_p50_s: float | None
    actual_interval_max_s: float | None
    late_threshold_s: float
    late_samples: int
    latest_s: float


class HeartbeatGap(TypedDict):
    heartbeats: int
    longest_gap_s: float | None


class Heartbeats(TypedDict):
    interval_s: float
    liveness: int
    workers: dict[str, HeartbeatGap]


class Hub(TypedDict):
    """Whether the harness kept its own schedule (harness.watch.hub_lag)."""

    fell_behind: bool
    threshold_s: float
    threshold: str
    worst_lag_s: float
    worst_in: str | None
    worst_at_s: float | None
    probe_interval_s: float
    processes: dict[str, EventLoopLag]
    overall: EventLoopLag
    sampler: SamplerSchedule
    heartbeats: NotRequired[Heartbeats]  # on a master


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


class WorkerTotals(Conflicts):
    calls: int
    succeeded: int
    failed: int
    retries: int


class LostWorker(TypedDict):
    worker: str
    state: str
    last_shipment_at: str | None


class Workers(TypedDict):
    shipped: dict[str, WorkerTotals]
    lost: list[LostWorker]
    settings: dict[str, str]  # each worker's settings fingerprint
    shipments_lost: dict[str, int]


class Finding(TypedDict):
    """An evidence problem or note."""

    kind: str
    detail: str


class Evidence(TypedDict):
    ok: bool
    problems: list[Finding]
    notes: list[Finding]


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
    stages: NotRequired[list[Stage]]  # with --shape
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
