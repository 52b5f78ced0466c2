"""Whether the harness kept its own schedule: the report's `hub` section.

Every figure of a run is taken on gevent's event loop (the hub) of some process: agents' calls,
Locust's heartbeats, the server sampler. Code that holds the hub without yielding (a busy
process, a tool doing CPU work) delays all of them, and a call's measured latency then includes
the harness's own delay. Three witnesses, cheap and exact:

- a probe greenlet in every process of the run (the local runner; the master and each worker)
  sleeps PROBE_INTERVAL_S in a loop and records by how much each wake-up overshot: a histogram
  with the same buckets as the calls' latencies, which a worker ships to the master with its
  metrics and the master adds up;
- the server sampler records how late each sample started against its schedule;
- on a master, the gap between two heartbeats of each worker, as Locust receives them.

The hub `fell_behind` when a probe or the sampler was late by more than Locust's heartbeat
interval: by then a heartbeat was late, and calls' latencies carry that much of the harness's
own delay. A warning, not a failure: the audits do not depend on timing, and a latency SLA the
delay breaks fails on its own figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import gevent
from locust.runners import HEARTBEAT_INTERVAL, HEARTBEAT_LIVENESS

from harness.report_shape import EventLoopLag, Finding, HeartbeatGap, Heartbeats, Hub, SamplerSchedule
from harness.watch.histogram import Histogram

__all__ = ["FELL_BEHIND_S", "PROBE_INTERVAL_S", "HeartbeatGaps", "HubLag", "HubLagProbe", "hub_note", "hub_section"]

PROBE_INTERVAL_S = 0.1
# Late by one heartbeat interval, the hub has missed a heartbeat (Locust marks a worker missing
# after HEARTBEAT_LIVENESS of them).
FELL_BEHIND_S = float(HEARTBEAT_INTERVAL)
# A sample that started later than this share of --sample-interval after its due time is late.
_LATE_SAMPLE_SHARE = 0.1


class HubLag:
    """One process's probe wake-ups: how late each was (a histogram, in µs buckets), and the
    latest one with its time since the test started. Merges exactly, like the metrics."""

    __slots__ = ("lag", "worst_s", "worst_at_s")

    def __init__(self) -> None:
        self.lag = Histogram()
        self.worst_s = 0.0
        self.worst_at_s: float | None = None

    def record(self, lag_s: float, at_s: float) -> None:
        self.lag.record(lag_s)
        if self.worst_at_s is None or lag_s > self.worst_s:
            self.worst_s, self.worst_at_s = lag_s, at_s

    def merge(self, other: HubLag) -> None:
        self.lag.merge(other.lag)
        if other.worst_at_s is not None and (self.worst_at_s is None or other.worst_s > self.worst_s):
            self.worst_s, self.worst_at_s = other.worst_s, other.worst_at_s

    def summary(self) -> EventLoopLag:
        figures = self.lag.summary_ms()
        return {"wakeups": figures["count"], "p50_s": _seconds_of_ms(figures["p50"]),
                "p99_s": _seconds_of_ms(figures["p99"]),
                "max_s": None if self.worst_at_s is None else round(self.worst_s, 6),  # exact, not its bucket
                "max_at_s": None if self.worst_at_s is None else round(self.worst_at_s, 3)}

    def to_dict(self) -> dict[str, Any]:
        return {"lag": self.lag.to_dict(), "worst_s": self.worst_s, "worst_at_s": self.worst_at_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HubLag:
        lag = cls()
        lag.lag = Histogram.from_dict(data["lag"])
        lag.worst_s, lag.worst_at_s = data["worst_s"], data["worst_at_s"]
        return lag


def _seconds_of_ms(ms: float | None) -> float | None:
    # To the microsecond, as the histograms count: rounded coarser, a percentile's bucket and the
    # exact maximum could round apart (2,950 µs to 0.003 s beside a maximum of 0.0029 s).
    return None if ms is None else round(ms / 1000, 6)


class HubLagProbe:
    """This process's probe: runs from start() to stop(); take() hands over what it recorded
    since the last take (a worker ships it)."""

    def __init__(self) -> None:
        self._lag = HubLag()
        self._greenlet: gevent.Greenlet | None = None
        self._started = 0.0

    def start(self) -> None:
        """Probe afresh (a new test)."""
        self.stop()
        self._lag = HubLag()
        self._started = time.monotonic()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            due = time.monotonic() + PROBE_INTERVAL_S
            gevent.sleep(PROBE_INTERVAL_S)
            woke = time.monotonic()
            self._lag.record(max(0.0, woke - due), due - self._started)

    def take(self) -> HubLag:
        taken, self._lag = self._lag, HubLag()
        return taken

    def stop(self) -> None:
        """Stop probing; what was recorded stays there for take()."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None


class HeartbeatGaps:
    """On a master: the longest gap between two heartbeats of each worker during the test, as
    Locust's master received them (its `heartbeat_sent` event, fired as it answers one)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._gaps: dict[str, HeartbeatGap] = {}

    def begin(self, workers: Iterable[str]) -> None:
        """A test starts with `workers`: a worker not heard from yet is counted from now (its
        first heartbeat may come late too)."""
        self._gaps.clear()
        now = time.time()  # Locust's heartbeat timestamps are wall-clock
        for worker in workers:
            self._last.setdefault(worker, now)

    def on_heartbeat(self, client_id: str, timestamp: float, **_: Any) -> None:
        last = self._last.get(client_id)
        self._last[client_id] = timestamp
        seen = self._gaps.setdefault(client_id, {"heartbeats": 0, "longest_gap_s": None})
        seen["heartbeats"] += 1
        if last is not None:
            gap = round(timestamp - last, 3)
            seen["longest_gap_s"] = gap if seen["longest_gap_s"] is None else max(seen["longest_gap_s"], gap)

    def summary(self) -> Heartbeats:
        return {"interval_s": HEARTBEAT_INTERVAL, "liveness": HEARTBEAT_LIVENESS,
                "workers": {worker: seen.copy() for worker, seen in sorted(self._gaps.items())}}


def _sampler_schedule(rows: list[dict[str, Any]], asked_s: float) -> SamplerSchedule:
    starts = [row["t_s"] for row in rows]
    intervals = Histogram()
    for earlier, later in zip(starts, starts[1:]):
        intervals.record(later - earlier)
    late_by = [row["sampler_late_s"] for row in rows]
    late_threshold = round(asked_s * _LATE_SAMPLE_SHARE, 3)
    return {
        "asked_interval_s": asked_s,
        "samples": len(rows),
        "actual_interval_p50_s": _seconds_of_ms(intervals.percentile_ms(50)),
        "actual_interval_max_s": _seconds_of_ms(intervals.percentile_ms(100)),
        "late_threshold_s": late_threshold,
        "late_samples": sum(late > late_threshold for late in late_by),
        "latest_s": round(max(late_by, default=0.0), 3),
    }


def hub_section(
    lags: dict[str, HubLag], samples: list[dict[str, Any]], sample_interval_s: float,
    heartbeats: Heartbeats | None,
) -> Hub:
    """The report's `hub` section from each process's probe (by process name), the sampler's
    rows, and on a master the workers' heartbeat gaps."""
    overall = HubLag()
    for lag in lags.values():
        overall.merge(lag)
    sampler = _sampler_schedule(samples, sample_interval_s)
    late = [(lag.worst_s, process, lag.worst_at_s) for process, lag in lags.items() if lag.worst_at_s is not None]
    late += [(row["sampler_late_s"], "server sampler", row["t_s"]) for row in samples]
    worst_s, worst_in, worst_at_s = max(late, default=(0.0, None, None), key=lambda entry: entry[0])
    section: Hub = {
        "fell_behind": worst_s > FELL_BEHIND_S,
        "threshold_s": FELL_BEHIND_S,
        "threshold": "an event loop (a probe or the sampler) late by more than Locust's heartbeat interval",
        "worst_lag_s": round(worst_s, 3),
        "worst_in": worst_in,
        "worst_at_s": None if worst_at_s is None else round(worst_at_s, 3),
        "probe_interval_s": PROBE_INTERVAL_S,
        "processes": {process: lag.summary() for process, lag in sorted(lags.items())},
        "overall": overall.summary(),
        "sampler": sampler,
    }
    if heartbeats is not None:
        section["heartbeats"] = heartbeats
    return section


def hub_note(hub: Hub) -> Finding | None:
    """The evidence note (not a problem: the verdict stands) of a hub that fell behind; None
    when it kept up."""
    if not hub["fell_behind"]:
        return None
    return {"kind": "hub_fell_behind",
            "detail": f"the {hub['worst_in']}'s event loop fell behind by {hub['worst_lag_s']:.1f} s"
                      f" (at {hub['worst_at_s']:.1f} s; more than Locust's {hub['threshold_s']:g} s heartbeat"
                      " interval): figures of latency include the harness's own delay; spread the agents over"
                      " more load processes (use --processes N, or more workers)"}
