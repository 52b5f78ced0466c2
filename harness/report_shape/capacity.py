"""--capacity: a probe's own run's `probe` section, and the search's file (`capacity`, its
`probes`)."""

from typing_extensions import TypedDict

from harness.report_shape.sla import SlaResult, Stage

__all__ = ["Capacity", "CapacityFile", "CapacityProbe", "ProbeRun", "UslModel"]


class ProbeRun(TypedDict):
    """The `probe` section of a capacity probe's own run (harness.verdict.probe)."""

    agents: int
    warmup_s: float
    step_s: float
    window_s: float  # the sliding window: the last two steps, checked at each step's end
    min_s: float
    max_s: float
    min_calls: int
    # evidence: min_s and min_calls measured; window: a window broke a latency or rate rule;
    # longest: max_s measured without min_calls; interrupted: ended otherwise (Ctrl-C, a load that failed)
    stopped: str
    broken: list[str]  # with stopped "window": the rules the window broke
    warmup_calls: int  # left out of `measured` and `sla`, never out of the audits
    measured: Stage  # the probe after its warm-up
    sla: list[SlaResult]  # every rule, over `measured`
    data: str  # fresh: on data its run re-created and seeded; kept: on the data earlier probes left
    scoped_checks: list[str]  # kept: the audit checks judged, by its own calls' identities ([] on fresh)
    not_judged: list[str]  # kept: the checks that need the data's state before the probe, not judged


class CapacityProbe(TypedDict):
    """One probe of a search, as its run judged it."""

    agents: int
    passed: bool
    limiting: str  # what failed it, or on a pass the rule nearest its threshold ("" if none)
    detail: str  # the failed rules, audit checks or evidence, in words; on a pass the margin
    stopped: str  # ProbeRun's
    started_s: float  # from the search's start
    wall_s: float  # the whole child run, audit included
    load_processes: int  # that ran its agents: its workers (--processes), or the one local runner
    duration_s: float  # measured, after the warm-up
    calls: int  # measured
    warmup_calls: int
    throughput_per_s: float
    p95_ms: float | None
    pool_wait_p95_ms: float | None
    conflict_rate: float | None
    audit_ok: bool
    failed_checks: list[str]
    sla: list[SlaResult]
    run_id: str
    seed: int
    data: str  # ProbeRun's: fresh or kept
    scoped_checks: list[str]  # ProbeRun's
    not_judged: list[str]  # ProbeRun's


class UslModel(TypedDict):
    lam: float
    sigma: float
    kappa: float
    r_squared: float
    peak_agents: float | None
    peak_throughput_per_s: float | None


class Capacity(TypedDict):
    capacity: int  # the most agents every probe of which passed; 0: not even the first count
    failing: int | None  # the fewest agents a probe failed at
    precision: int  # agents
    precision_asked: str
    repeats: int  # k
    confirmed: bool
    cut_short: bool
    budget_s: float
    elapsed_s: float
    expected: int | None  # --expect-capacity
    data: str  # how each probe's data was made fresh, or kept
    scoped_checks: list[str]  # the checks some probe on kept data judged by its own calls' identities
    not_judged: list[str]  # the checks some probe on kept data did not judge
    knee_agents: int | None  # the measured knee: the fewest agents within 5 % of the most calls/s
    model: UslModel | None  # with probes at MIN_DISTINCT_AGENTS distinct counts or more
    answer: str  # in words, as the console prints it
    probes: list[CapacityProbe]


class CapacityFile(TypedDict):
    """--report-json of a --capacity search."""

    report_version: int
    capacity: Capacity
    exit_code: int
