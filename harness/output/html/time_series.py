"""The section's time series: the server sampler's columns, the pool's samples per load process, and
whatever else the scenarios sample, one chart each."""

from __future__ import annotations

from typing import Any

from harness.output.html.chart import _COLORS, _chart
from harness.output.html.figures import _seconds
from harness.output.html.markup import _block

__all__ = ["_charts"]


# The sampler's columns charted: chart name, title, column, series label, unit, color. "pool" is
# the load processes' pool samples, not a sampler column.
_SERIES = (
    ("lock_waiters", "Sessions waiting for a lock", "pg_lock_waiters", "lock waiters", "", "#ff9f00"),
    ("blocking_chain", "Longest blocking chain (sessions)", "pg_longest_blocking_chain", "longest chain", "",
     "#9966CC"),
    ("deadlocks", "Deadlocks (PostgreSQL, since the start)", "pg_deadlocks", "deadlocks", "", "#ff6d6d"),
    ("pool_waiting", "Pool: requests waiting for a connection", "pool", "waiting", "", "#00ca5a"),
    ("agents", "Agents running", "agents", "agents", "", "#0099ff"),
    ("lock_wait", "Longest lock wait (ms)", "pg_longest_lock_wait_ms", "longest wait", " ms", "#8A2BE2"),
    ("rollbacks", "Rollbacks (PostgreSQL, since the start)", "pg_xact_rollback", "rollbacks", "", "#8E4585"),
    ("redis_ops", "Redis ops/s", "redis_ops_per_sec", "ops/s", "", "#ff6d6d"),
    ("redis_clients", "Redis clients", "redis_connected_clients", "clients", "", "#0099ff"),
    ("sampler_late", "Sampler: started late by (s), the harness's hub", "sampler_late_s", "late by", " s", "#ff9f00"),
)
_NOT_CHARTED = {"t_s", "pg_xact_commit", "pg_conflicts", "redis_rejected_connections"}


def _charts(report: dict[str, Any]) -> str:
    rows = report["timeseries"]
    faults = report.get("faults") or []
    x_end = report["run"]["duration_s"] or 0.0

    def series_of(column: str) -> list[tuple[float, float]]:
        return [(row["t_s"], float(row[column])) for row in rows
                if isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool)]

    def pool_series(label: str) -> list[tuple[str, list[tuple[float, float]]]]:
        by_process: dict[Any, list[tuple[float, float]]] = {}
        for sample in report["pool"]["samples"]:
            by_process.setdefault(sample["process"], []).append((sample["t"], float(sample["waiting"])))
        if len(by_process) > 1:
            return [(f"worker {process}", points) for process, points in sorted(by_process.items())]
        return [(label, points) for points in by_process.values()] or [(label, [])]

    charts = [_chart(name, title, pool_series(label) if column == "pool" else [(label, series_of(column))],
                     x_end, faults, unit, color)
              for name, title, column, label, unit, color in _SERIES]
    charted = _NOT_CHARTED | {column for _, _, column, *_ in _SERIES}
    for index, column in enumerate(dict.fromkeys(c for row in rows for c in row if c not in charted)):
        points = series_of(column)  # what the scenarios sample: queue depth, outbox relay catch-ups, ...
        if points:
            charts.append(_chart(column, column.replace("_", " ").capitalize(), [(column.replace("_", " "), points)],
                                 x_end, faults, color=_COLORS[(index + 4) % len(_COLORS)]))
    what = (f"{len(rows):,} samples of the servers over {_seconds(x_end)}" if rows
            else "No sample of the servers was taken (the run was shorter than --sample-interval)")
    if faults:
        what += "; dashed red lines: the faults injected (--chaos)"
    return _block("Time Series", f"<p class='tc-note' style='margin-bottom:8px'>{what}.</p>"
                  f"<div class='tc-charts'>{''.join(charts)}</div>", "timeseries")
