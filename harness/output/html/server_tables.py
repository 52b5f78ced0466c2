"""The section's tables of what the servers hold and did: the audit of their data, their counters,
the pool, whether the harness's own event loops kept their schedule, and the faults injected."""

from __future__ import annotations

from html import escape
from typing import Any

from harness.output.html.figures import DASH, _label, _ms, _number, _seconds
from harness.output.html.markup import _block, _cell, _mark, _note, _row, _table

__all__ = ["_audit", "_server"]


def _audit(report: dict[str, Any]) -> str:
    rows = [_row(_cell(escape(c["name"])), _cell(_number(c["expected"]), True), _cell(_number(c["observed"]), True),
                 _cell(_mark(c["ok"])), _cell(_note(escape(str(c["detail"]))) if c["detail"] else ""))
            for c in report["audit"]["checks"]]
    baseline = ", ".join(f"{_label(k)} {_number(v)}" for k, v in report["baseline"].items())
    head = (f"<p>The audit: {_mark(report['audit']['ok'], 'ok', 'FAILED')}, after the load stopped, against the"
            f" state the harness seeded: {baseline}.</p>")
    if report["not_audited_by_identity"]:
        head += (f"<p class='tc-fail'>Not audited by identity (no check compared their calls with the servers'"
                 f" data): {escape(', '.join(report['not_audited_by_identity']))}.</p>")
    return _block("Audit", head + _table("audit", ["Check", "Expected", "Observed", "Result", "Detail"], rows),
                  "audit")


_SERVER_FIGURES = {
    "deadlocks": "deadlocks (pg_stat_database, over the run)",
    "xact_commit": "commits",
    "xact_rollback": "rollbacks",
    "conflicts": "recovery conflicts",
    "load_sessions_left": "load sessions left at the audit",
    "samples": "samples taken",
    "peak_lock_waiters": "peak sessions waiting for a lock",
    "longest_lock_wait_ms": "longest lock wait",
    "longest_blocking_chain": "longest blocking chain (sessions)",
    "peak_redis_clients": "peak Redis clients",
    "peak_redis_ops_per_sec": "peak Redis ops/s",
    "redis_rejected_connections": "Redis rejected connections",
}


def _server(report: dict[str, Any]) -> str:
    server = report["server_counters"]
    rows = [_row(_cell(escape(label)), _cell(_ms(server[key]) if key.endswith("_ms") else _number(server[key]), True))
            for key, label in _SERVER_FIGURES.items() if key in server]
    rows += [_row(_cell(_label(key)), _cell(_number(value), True)) for key, value in server.items()
             if key not in _SERVER_FIGURES and key != "deadlock_timeout" and not isinstance(value, (dict, list))]
    figures = _block("Servers", _table("server", ["Figure", "Value"], rows), "server")
    pool = report["pool"]
    fewest = pool["min_available"]
    rows = [_row(_cell("peak requests waiting for a connection"), _cell(_number(pool["peak_waiting"]), True)),
            _row(_cell("fewest free connections"),
                 _cell(_number(fewest) if fewest is not None else f"{DASH} {_note('(no pool sample)')}", True))]
    for finding in pool["at_rest"]:
        rows.append(_row(
            _cell(f"at rest, process {escape(str(finding.get('process', '?')))}"),
            _cell(", ".join(f"{_label(k)} {_number(v)}" for k, v in finding.items() if k != "process"))))
    pool_part = _block("Pool", _table("pool", ["Figure", "Value"], rows), "pool")
    hub_part = _hub(report["hub"])
    faults = ""
    if report.get("faults"):
        rows = [_row(_cell(_seconds(f.get("at_s")), True), _cell(escape(f["kind"])),
                     _cell(_number(f.get("targets")), True), _cell(_number(f.get("hit")), True))
                for f in report["faults"]]
        faults = _block("Faults (--chaos)", _table("faults", ["At", "Fault", "Targets", "Hit"], rows), "faults")
    return f"<div class='tc-pair'>{figures}<div class='tc-stack'>{pool_part}{hub_part}{faults}</div></div>"


def _lag(value: float | None) -> str:
    """An event loop's lag: in milliseconds below a second."""
    if value is None:
        return DASH
    return f"{_number(value * 1000)} ms" if value < 1 else _seconds(value)


def _hub(hub: dict[str, Any]) -> str:
    """Whether the harness's own event loops kept their schedule (harness.watch.hub_lag)."""
    worst = _lag(hub["worst_lag_s"])
    if hub["fell_behind"]:
        state = (f"<span class='tc-warn'>fell behind</span> by {worst} (the {escape(hub['worst_in'])},"
                 f" at {_seconds(hub['worst_at_s'])})")
    else:
        state = f"<span class='tc-ok'>kept up</span> {_note(f'(worst lag {worst})')}"
    threshold = _note(f"(falling behind: late by more than {_seconds(hub['threshold_s'])},"
                      " Locust's heartbeat interval)")
    rows = [_row(_cell(f"event loops {threshold}"), _cell(state))]
    for process, lag in hub["processes"].items():
        figures = ", ".join(f"{name} {_lag(lag[f'{name}_s'])}" for name in ("p50", "p99", "max"))
        wakeups = _note(f"({_number(lag['wakeups'])} wake-ups)")
        rows.append(_row(_cell(f"lag of the {escape(process)}"), _cell(f"{figures} {wakeups}", True)))
    sampler = hub["sampler"]
    intervals = f"p50 {_seconds(sampler['actual_interval_p50_s'])}, max {_seconds(sampler['actual_interval_max_s'])}"
    late_by = _lag(sampler["late_threshold_s"])
    late = (f"{_number(sampler['late_samples'])} of {_number(sampler['samples'])} samples late"
            f" {_note(f'(by more than {late_by})')}")
    rows.append(_row(_cell(f"server sampler, asked every {_seconds(sampler['asked_interval_s'])}"),
                     _cell(f"{intervals}; {late}", True)))
    for worker, seen in hub.get("heartbeats", {}).get("workers", {}).items():
        rows.append(_row(_cell(f"heartbeats of worker {escape(worker)}"),
                         _cell(f"{_number(seen['heartbeats'])}, longest gap {_seconds(seen['longest_gap_s'])}", True)))
    return _block("Harness", _table("hub", ["Figure", "Value"], rows), "hub")
