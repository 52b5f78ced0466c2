"""The run's report, built from what the agents recorded, the servers' counters and the audits
(harness.output writes it as JSON and as the console summary; its shape: harness.report_shape)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypedDict

from db.audits import ANOMALIES, Check
from harness.config import sla
from harness.report_shape import (
    REPORT_VERSION,
    Audit,
    CheckResult,
    Conflicts,
    Distribution,
    Figures,
    HistoryCheck,
    Measured,
    Pool,
    Run,
    ServerCounters,
    ServerDescription,
    SlaResult,
    Stage,
    TimeseriesRow,
    ToolFigures,
    Transport,
)
from harness.watch.metrics import Metrics, ToolStats
from tasks.list_append_audit import HISTORY_CHECK

__all__ = ["StageStart", "build_report", "period_figures", "stage_report", "stage_reports"]


def build_report(
    *,
    metrics: Metrics,
    server_counters: ServerCounters,
    checks: list[Check],
    run: Run,
    servers: list[ServerDescription],
    timeseries: list[TimeseriesRow],
    transport: Transport,
) -> Measured:
    """Everything but the SLA results and the verdict, which are computed from this."""
    anomalies = _anomalies(checks)
    history_check, checks = _history_check(checks)
    measured: Measured = {
        "report_version": REPORT_VERSION,
        "run": run,
        "servers": servers,
        "transport": transport,
        "tools": _tools(metrics, transport),
        "conflicts": _conflicts(metrics),
        "errors": metrics.errors,
        "latency_ms": _latencies(metrics, transport),
        "turns": metrics.turns.section(),
        "workflows": metrics.workflows.section(),
        "server_counters": server_counters,
        "anomalies": anomalies,
        "audit": _audit(checks, anomalies),
        "pool": _pool_section(metrics),
        "timeseries": timeseries,
    }
    if history_check is not None:
        measured["history_check"] = history_check
    return measured


def _history_check(checks: list[Check]) -> tuple[HistoryCheck | None, list[Check]]:
    """The list_append audit's answer, lifted out of its check (whose observed keeps the
    forbidden anomalies' counts) into its own section."""
    for i, check in enumerate(checks):
        if check.name == HISTORY_CHECK and isinstance(check.observed, dict) and "answer" in check.observed:
            answer: HistoryCheck = check.observed["answer"]
            kept = replace(check, observed=check.observed["forbidden"])
            return answer, [*checks[:i], kept, *checks[i + 1:]]
    return None, checks


def _tools(metrics: Metrics, transport: Transport) -> dict[str, ToolFigures]:
    over_mcp = transport["kind"] == "mcp"
    tools = {}
    for name, stats in sorted(metrics.tools.items()):
        latency = stats.latency.summary_ms()
        tools[name] = ToolFigures(
            calls=stats.calls,
            succeeded=stats.succeeded,
            failed=stats.failed,
            refused=stats.refused,
            indeterminate=stats.indeterminate,
            cut_off=stats.cut_off,
            interrupted=stats.interrupted,
            attempts=stats.attempts,
            retries=stats.retries,
            failures=dict(stats.failures),
            p50_ms=latency["p50"],
            p95_ms=latency["p95"],
            p99_ms=latency["p99"],
            max_ms=latency["max"],
            server_attempts=stats.server_attempts if over_mcp else None,
            server_failures=dict(stats.server_failures) if over_mcp else None,
        )
    return tools


def _conflicts(metrics: Metrics) -> Conflicts:
    counts = metrics.conflicts
    return Conflicts(
        deadlocks=counts["deadlocks"],
        serialization_failures=counts["serialization_failures"],
        version_conflicts=counts["version_conflicts"],
        lock_timeouts=counts["lock_timeouts"],
        pool_timeouts=counts["pool_timeouts"],
        queue_rejections=counts["queue_rejections"],
        redis_watch_conflicts=counts["redis_watch_conflicts"],
        connection_errors=counts["connection_errors"],
        indeterminate=counts["indeterminate"],
    )


# The distributions that time what happens inside the tool server: over MCP, the agents never see them.
_SERVER_SIDE = ("pool_wait", "deadlock_detection", "deadlock_resolution")


def _latencies(metrics: Metrics, transport: Transport) -> dict[str, Distribution]:
    unseen = _SERVER_SIDE if transport["kind"] == "mcp" else ()
    return {name: h.summary_ms() for name, h in metrics.distributions.items() if name not in unseen}


def _anomalies(checks: Sequence[Check]) -> dict[str, int]:
    anomalies = dict.fromkeys(ANOMALIES, 0)
    for check in checks:
        if check.anomaly:
            anomalies[check.anomaly] = anomalies.get(check.anomaly, 0) + check.anomaly_count
    return anomalies


def _audit(checks: Sequence[Check], anomalies: dict[str, int]) -> Audit:
    return {
        "ok": all(c.ok for c in checks) and not any(anomalies.values()),
        "checks": [_check_result(c) for c in checks],
    }


def _check_result(check: Check) -> CheckResult:
    return CheckResult(name=check.name, ok=check.ok, expected=check.expected, observed=check.observed,
                       detail=check.detail, anomaly=check.anomaly, anomaly_count=check.anomaly_count)


def _pool_section(metrics: Metrics) -> Pool:
    samples = sorted(metrics.pool_samples, key=lambda s: (s["t"], s["process"]))
    return {
        "peak_waiting": max((s["waiting"] for s in samples), default=None),
        "min_available": min((s["available"] for s in samples), default=None),
        "at_rest": metrics.findings,
        "samples": samples,
    }


class StageStart(TypedDict):
    """When the load shape entered a stage (harness.run.lifecycle)."""

    stage: int
    agents: int
    started: float  # time.monotonic()


def stage_reports(
    metrics: Metrics, stages: list[StageStart], ended: float, rules: tuple[sla.Rule, ...],
    scopes: dict[str, list[str]], isolation: str, transport: Transport,
) -> list[Stage]:
    """Per stage of a load shape: agents, throughput, p95, conflict rate, pool wait p95, the
    turn figures the per-turn SLA rules read, and whether each SLA held, so the user sees at
    which number of agents the platform stops meeting its SLAs (the audits are of the whole
    run, not of a stage)."""
    reports = []
    for position, stage in enumerate(stages):
        until = stages[position + 1]["started"] if position + 1 < len(stages) else ended
        stage_metrics = metrics.stages.get(stage["stage"], Metrics(keep_op_ids=False))
        figures = period_figures(stage_metrics, until - stage["started"], isolation, transport)
        reports.append(stage_report(stage["stage"], stage["agents"], stage_metrics, figures,
                                    sla.evaluate(rules, figures, scopes)))
    return reports


def period_figures(metrics: Metrics, duration_s: float, isolation: str, transport: Transport) -> Figures:
    """What SLA rules read of a part of the run (a stage, a capacity probe's window): its calls'
    figures, no audit (the audits are of the whole run)."""
    anomalies = _anomalies([])
    return {
        "run": {"duration_s": max(duration_s, 1e-9), "isolation": isolation},
        "transport": transport,
        "tools": _tools(metrics, transport),
        "conflicts": _conflicts(metrics),
        "latency_ms": _latencies(metrics, transport),
        "turns": metrics.turns.section(),
        "anomalies": anomalies,
        "audit": _audit([], anomalies),
    }


def stage_report(index: int, agents: int, metrics: Metrics, figures: Figures, results: list[SlaResult]) -> Stage:
    """A part of the run summed up, with its SLA results (`results`, from `figures`)."""
    duration = figures["run"]["duration_s"]
    all_tools = ToolStats()
    for stats in metrics.tools.values():
        all_tools.merge(stats)
    conflicts = sum(metrics.conflicts.values()) - metrics.conflicts["indeterminate"]
    return Stage(
        stage=index,
        agents=agents,
        duration_s=round(duration, 3),
        calls=all_tools.calls,
        throughput_per_s=round(all_tools.calls / duration, 2),
        p95_ms=all_tools.latency.percentile_ms(95),
        conflict_rate=conflicts / all_tools.attempts if all_tools.attempts else None,
        pool_wait_p95_ms=(None if figures["transport"]["kind"] == "mcp"
                          else metrics.distributions["pool_wait"].percentile_ms(95)),
        turns=figures["turns"]["turns"],
        turn_p95_ms=figures["turns"]["latency_ms"]["p95"],
        turns_with_conflicts=figures["turns"]["with_conflicts"],
        sla_ok=all(r["ok"] for r in results),
        sla=[{"name": r["name"], "observed": r["observed"], "ok": r["ok"]} for r in results],
    )
