"""Whether the harness kept its own schedule: its event loops' lag, the sampler's, the heartbeats'
gaps."""

from typing_extensions import NotRequired, TypedDict

__all__ = ["EventLoopLag", "HeartbeatGap", "Heartbeats", "Hub", "SamplerSchedule"]


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
