"""The run's report, built from what the agents recorded, the servers' counters and the audits
(harness.output writes it as JSON and as the console summary)."""

from __future__ import annotations

from typing import Any

from db.audits import ANOMALIES, Check
from harness.config import sla
from harness.watch.metrics import Histogram, Metrics

__all__ = ["build_report", "stage_reports"]


def build_report(
    *,
    metrics: Metrics,
    server: dict[str, Any],
    checks: list[Check],
    run: dict[str, Any],
    servers: list[dict[str, str]],
    timeseries: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything but the SLA results and the verdict, which are computed from this."""
    tools = {}
    for name, stats in sorted(metrics.tools.items()):
        latency = stats.latency.summary_ms()
        tools[name] = {
            "calls": stats.calls,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "refused": stats.refused,
            "indeterminate": stats.indeterminate,
            "interrupted": stats.interrupted,
            "attempts": stats.attempts,
            "retries": stats.retries,
            "failures": dict(stats.failures),
            "p50_ms": latency["p50"],
            "p95_ms": latency["p95"],
            "p99_ms": latency["p99"],
            "max_ms": latency["max"],
        }
    anomalies = dict.fromkeys(ANOMALIES, 0)
    for check in checks:
        if check.anomaly:
            anomalies[check.anomaly] = anomalies.get(check.anomaly, 0) + check.anomaly_count
    return {
        "run": run,
        "servers": servers,
        "tools": tools,
        "conflicts": dict(metrics.conflicts),
        "errors": metrics.errors,
        "latency_ms": {name: h.summary_ms() for name, h in metrics.distributions.items()},
        "server": server,
        "anomalies": anomalies,
        "audit": {
            "ok": all(c.ok for c in checks) and not any(anomalies.values()),
            "checks": [c.as_dict() for c in checks],
        },
        "pool": _pool_section(metrics),
        "timeseries": timeseries,
    }


def _pool_section(metrics: Metrics) -> dict[str, Any]:
    samples = sorted(metrics.pool_samples, key=lambda s: (s["t"], s["process"]))
    return {
        "peak_waiting": max((s["waiting"] for s in samples), default=0),
        "min_available": min((s["available"] for s in samples), default=None),
        "at_rest": metrics.findings,
        "samples": samples,
    }


def stage_reports(
    metrics: Metrics, stages: list[dict[str, Any]], ended: float, rules: tuple[Any, ...], scopes: dict[str, list[str]],
    isolation: str,
) -> list[dict[str, Any]]:
    """Per stage of a load shape: agents, throughput, p95, conflict rate, pool wait p95, and
    whether each SLA held, so the user sees at which number of agents the platform stops
    meeting its SLAs (the audits are of the whole run, not of a stage)."""
    steps = []
    for position, stage in enumerate(stages):
        until = stages[position + 1]["started"] if position + 1 < len(stages) else ended
        duration = max(until - stage["started"], 1e-9)
        stage_metrics = metrics.stages.get(stage["stage"], Metrics(keep_op_ids=False))
        report = build_report(metrics=stage_metrics, server={}, checks=[],
                              run={"duration_s": duration, "isolation": isolation}, servers=[], timeseries=[])
        all_calls = Histogram()
        for stats in stage_metrics.tools.values():
            all_calls.merge(stats.latency)
        attempts = sum(t.attempts for t in stage_metrics.tools.values())
        conflicts = sum(stage_metrics.conflicts.values()) - stage_metrics.conflicts["indeterminate"]
        results = sla.evaluate(rules, report, scopes)
        steps.append({
            "stage": stage["stage"],
            "agents": stage["agents"],
            "duration_s": round(duration, 3),
            "calls": sum(t.calls for t in stage_metrics.tools.values()),
            "throughput_per_s": round(sum(t.calls for t in stage_metrics.tools.values()) / duration, 2),
            "p95_ms": all_calls.percentile_ms(95),
            "conflict_rate": conflicts / attempts if attempts else None,
            "pool_wait_p95_ms": stage_metrics.distributions["pool_wait"].percentile_ms(95),
            "sla_ok": all(r["ok"] for r in results),
            "sla": [{"name": r["name"], "observed": r["observed"], "ok": r["ok"]} for r in results],
        })
    return steps
