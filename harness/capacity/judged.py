"""A capacity probe judged from its own run's report: it passes only if its run could be judged
(evidence), every audit check held over the whole run, warm-up included, every SLA rule held over
its measured part, and it measured for as long and as many calls as its plan asked (it was not
cut short by a window, nor by its longest). Named per probe: the limiting side, the first of
those that failed, or on a pass the rule nearest its threshold."""

from __future__ import annotations

from harness.config.sla import METRICS
from harness.report_shape import CapacityProbe, Report, SlaResult

__all__ = ["judge_probe", "limiting_side"]

# What a rule's metric says about where the platform gave way, by the metric's name.
_SIDES = (
    ("pool_", "pool wait"),
    ("deadlock", "deadlocks"),
    ("serialization_failures", "serialization failures"),
    ("lock_timeouts", "lock waits"),
    ("version_conflicts", "version conflicts"),
    ("redis_watch_conflicts", "Redis WATCH conflicts"),
    ("queue_", "the queue"),
    ("connection_errors", "connections"),
    ("turn", "turn latency"),
    ("tool_p", "tool latency"),
    ("tool_success_rate", "failed calls"),
    ("success_rate", "failed calls"),
    ("failure_rate", "failed calls"),
    ("errors", "errors"),
)
_CLIENT = "client CPU (hub lag)"


def limiting_side(metric: str) -> str:
    return next((side for prefix, side in _SIDES if metric.startswith(prefix)), metric)


def _usage(rule: SlaResult) -> float | None:
    """How near a held rule came to its threshold: 1 at the threshold. A rate that must stay
    above a share is read by what it may lose (a success rate of 0.99 against > 0.95: 0.2)."""
    observed, threshold = rule["observed"], rule["threshold"]
    if observed is None:
        return None
    if rule["op"] in ("<", "<="):
        return observed / threshold if threshold else None
    if METRICS[rule["metric"]].kind == "rate" and threshold < 1:
        return (1 - observed) / (1 - threshold)
    return threshold / observed if observed else None


def _behind_latency(side: str, report: Report) -> str:
    """What a latency side is behind, when the run shows it: the harness's own event loop late
    (its latencies partly its own: the client's CPU), or the pool's wait most of the p95."""
    if not side.endswith("latency"):
        return side
    if report["hub"]["fell_behind"]:
        return _CLIENT
    measured = report["probe"]["measured"]
    wait, p95 = measured["pool_wait_p95_ms"], measured["p95_ms"]
    if wait is not None and p95 and wait >= p95 / 2:
        return f"pool wait ({side})"
    return side


def _failed_on(report: Report, failed: list[SlaResult], broken: list[str]) -> tuple[str, str]:
    """(the side, in words what failed) of a probe whose checks held but not its rules: the side
    of the rule it broke furthest (by the probe's measured figures), or of the first."""
    by_name = {r["name"]: r for r in report["probe"]["sla"]}
    rules = [by_name[name] for name in broken if name in by_name] if broken else failed
    names = broken or [r["name"] for r in failed]
    furthest = max(rules, key=lambda rule: _usage(rule) or 0.0, default=None)
    side = _behind_latency(limiting_side(furthest["metric"]), report) if furthest else "SLA"
    where = f"a {report['probe']['window_s']:g} s window broke" if broken else "broke"
    return side, f"{where}: {'; '.join(names)}"


def judge_probe(report: Report, started_s: float, wall_s: float) -> CapacityProbe:
    """The probe of `report` (a run with a `probe` section), started `started_s` into the search,
    its child run `wall_s` long."""
    probe = report["probe"]
    failed_checks = [c["name"] for c in report["audit"]["checks"] if not c["ok"]]
    failed_rules = [r for r in probe["sla"] if not r["ok"]]
    if not report["audit"]["ok"]:
        anomalies = [f"{name} {n}" for name, n in report["anomalies"].items() if n]
        side, detail = "audit", "failed: " + ", ".join(failed_checks + anomalies)
    elif not report["evidence"]["ok"]:
        side, detail = "evidence", "cannot be judged: " + "; ".join(p["detail"] for p in report["evidence"]["problems"])
    elif probe["stopped"] == "window" or failed_rules:
        side, detail = _failed_on(report, failed_rules, probe["broken"] if probe["stopped"] == "window" else [])
    elif probe["stopped"] != "evidence":
        side = "too few calls" if probe["stopped"] == "longest" else "interrupted"
        detail = (f"{probe['measured']['calls']} calls in {probe['measured']['duration_s']:g} s, fewer than the"
                  f" {probe['min_calls']} a probe needs" if probe["stopped"] == "longest" else "the run ended early")
    else:
        side, detail = "", "every rule and check held"
        usages = [(usage, r) for r in probe["sla"] if (usage := _usage(r)) is not None]
        if usages:
            usage, nearest = max(usages, key=lambda pair: pair[0])
            side = _behind_latency(limiting_side(nearest["metric"]), report)
            detail = f"nearest: {nearest['name']} at {usage:.0%} of its threshold"
    measured = probe["measured"]
    passed = (report["audit"]["ok"] and report["evidence"]["ok"] and probe["stopped"] == "evidence"
              and not failed_rules)
    return CapacityProbe(
        agents=probe["agents"], passed=passed, limiting=side, detail=detail, stopped=probe["stopped"],
        started_s=round(started_s, 1), wall_s=round(wall_s, 1),
        load_processes=len(report["workers"]["shipped"]) if "workers" in report else 1,
        duration_s=measured["duration_s"],
        calls=measured["calls"], warmup_calls=probe["warmup_calls"], throughput_per_s=measured["throughput_per_s"],
        p95_ms=measured["p95_ms"], pool_wait_p95_ms=measured["pool_wait_p95_ms"],
        conflict_rate=measured["conflict_rate"], audit_ok=report["audit"]["ok"], failed_checks=failed_checks,
        sla=probe["sla"], run_id=report["run"]["run_id"], seed=report["run"]["seed"],
        data=probe["data"], scoped_checks=probe["scoped_checks"], not_judged=probe["not_judged"],
    )
