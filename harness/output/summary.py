"""The report written out: as JSON (--report-json), and as the console summary (also logged,
for Locust's Logs tab); `publish`, everywhere an audited test's report goes."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from harness.output.junit import write_junit
from harness.report_shape import CapacityFile, Hub, MatrixFile, Report, SlaResult
from harness.verdict.evidence import configuration_errors
from harness.watch.workflow_stats import ran_workflows
from history_check.check import cycle_text, validity

__all__ = ["format_summary", "log_summary", "publish", "write_json"]

_summary_log = logging.getLogger("toolclash.summary")


def write_json(report: Report | MatrixFile | CapacityFile, path: str) -> None:
    """Written whole or not at all (a script watching the file never reads half a report)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, target)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


_FAULT_TARGETS = {"pg-kill": "backends ended", "redis-kill": "Redis clients killed", "worker-stop": "workers stopped",
                  "mcp-kill": "tool servers killed"}


def _faults_line(report: Report) -> str:
    """--chaos: the faults of each kind, and what the run paid for them. The p95 is the slowest
    tool's over every call of the run: which calls a fault slowed down is not known."""
    times: dict[str, int] = {}
    hit: dict[str, int] = {}
    down: dict[str, float] = {}  # mcp-kill: the longest the tool server took to serve again
    for fault in report["faults"]:
        times[fault["kind"]] = times.get(fault["kind"], 0) + 1
        hit[fault["kind"]] = hit.get(fault["kind"], 0) + fault["hit"]
        if "down_s" in fault:
            down[fault["kind"]] = max(down.get(fault["kind"], 0.0), fault["down_s"])
    p95s = [(tool["p95_ms"], name) for name, tool in report["tools"].items() if tool["p95_ms"] is not None]
    slowest = "slowest tool p95={:.1f} ms ({})".format(*max(p95s)) if p95s else "no tool call"
    return ("faults: " + ", ".join(f"{kind} x{n} ({_FAULT_TARGETS[kind]}: {hit[kind]}"
                                   + (f", serving again within {down[kind]:.2f} s" if kind in down else "") + ")"
                                   for kind, n in times.items())
            + f"; cost: connection_errors={report['conflicts']['connection_errors']},"
              f" indeterminate={report['conflicts']['indeterminate']}, {slowest}")


def _hub_line(hub: Hub) -> str:
    """Whether the harness's event loops kept their schedule (harness.watch.hub_lag)."""
    sampler = hub["sampler"]
    worst = f"worst event-loop lag {hub['worst_lag_s']:.3f} s"
    if hub["worst_in"] is not None:
        worst += f" in the {hub['worst_in']} at {hub['worst_at_s']:.1f} s"
    return (f"hub: {'FELL BEHIND' if hub['fell_behind'] else 'kept up'} ({worst}; more than"
            f" {hub['threshold_s']:g} s is falling behind); sampler asked every {sampler['asked_interval_s']:g} s:"
            f" p50 {_figure(sampler['actual_interval_p50_s'])} s, max {_figure(sampler['actual_interval_max_s'])} s,"
            f" {sampler['late_samples']} of {sampler['samples']} samples late")


def _transport_lines(report: Report) -> list[str]:
    """Over MCP: the server and the protocol, what the MCP layer counted, and what it cannot see."""
    mcp = report["transport"].get("mcp")
    if mcp is None:
        return []
    name = " ".join(str(mcp["server_info"].get(key, "")) for key in ("name", "version")).strip() or "unnamed"
    attempts = mcp["attempts"]
    server = "not said" if attempts["server"] is None else attempts["server"]
    absorbed = ", ".join(f"{kind}={count}" for kind, count in sorted(mcp["server_failures"].items())) or "none"
    return [
        f"  MCP: {mcp['url']} ({mcp['server']} server {name}), {mcp['era']} era {mcp['protocol_version']};"
        f" sessions opened={mcp['sessions']['opened']} renewed={mcp['sessions']['renewed']}"
        f" closed={mcp['sessions']['closed']}; replies JSON={mcp['replies']['json']}"
        f" event-stream={mcp['replies']['event_stream']}; isError={mcp['is_error_replies']},"
        f" reissues={mcp['reissues']}",
        f"  MCP attempts: client={attempts['client']}, server={server} (its failed attempts: {absorbed});"
        f" not measurable over MCP: {', '.join(item['figure'] for item in mcp['not_measurable'])}",
    ]


def _turns_line(report: Report) -> str:
    """The agents' turns (harness.run.turns): how many calls each made, what the agent waited
    for, and how often its own calls collided."""
    turns = report["turns"]
    latency = turns["latency_ms"]
    sizes = ", ".join(f"{calls} call(s) x{count}" for calls, count in turns["calls_per_turn"].items()) or "none"
    return (f"turns: {turns['turns']} ({sizes}); latency ms p50={_ms(latency['p50'])} p95={_ms(latency['p95'])}"
            f" p99={_ms(latency['p99'])} max={_ms(latency['max'])}; with conflicts={turns['with_conflicts']},"
            f" same-key pairs={turns['same_key_pairs']}, overlapping same-key pairs="
            f"{turns['overlapping_same_key_pairs']}, collisions={turns['collisions']}")


def _workflows_line(report: Report) -> str:
    """The workflows' writes (docs/agents.md: Workflows across turns): how many wrote from a
    stale read, how stale (n/a: no write of the run says versions)."""
    workflows = report["workflows"]
    behind, ms = workflows["behind_versions"], workflows["stale_ms"]
    versions = "n/a" if behind is None else f"p50={behind['p50']} p95={behind['p95']} max={behind['max']}"
    return (f"workflows: {workflows['writes']} writes from reads, {workflows['stale_writes']} from stale reads;"
            f" versions behind {versions}; ms since the read p50={_ms(ms['p50'])} p95={_ms(ms['p95'])}"
            f" max={_ms(ms['max'])}")


def _pool_line(report: Report) -> str:
    pool = report["pool"]
    if pool["peak_waiting"] is None and report["transport"]["kind"] == "mcp":
        return "pool: not measurable over MCP (the tool server's pool is its own)"
    return (f"pool: peak requests waiting={_figure(pool['peak_waiting'])},"
            f" fewest free connections={_figure(pool['min_available'])}")


def _sla_line(rule: SlaResult) -> str:
    mark = "ok  " if rule["ok"] else "FAIL"
    if rule["not_measurable"]:
        return f"  [{mark}] {rule['name']}: not measurable over MCP: {rule['not_measurable']}"
    return f"  [{mark}] {rule['name']}: observed {_figure(rule['observed'])} (needs {rule['op']} {rule['threshold']:g})"


def _history_check_lines(report: Report) -> list[str]:
    """list_append's history as Elle would judge it: each anomaly type, forbidden or allowed by
    the model, with one cycle."""
    answer = report.get("history_check")
    if answer is None:
        return []
    lines = [f"history (list_append) against {answer['consistency_model']}: {validity(answer['valid'])},"
             f" {answer['stats']['transactions']} transactions"]
    for kind in answer["anomaly_types"]:
        forbidden = kind in answer["forbidden_anomaly_types"]
        line = f"  [{'FAIL' if forbidden else 'WARN'}] {kind} ×{answer['anomaly_counts'][kind]}" \
               f" ({'forbidden' if forbidden else 'allowed'})"
        cycle = cycle_text((answer["anomalies"].get(kind) or [{}])[0])
        lines.append(line + (f": {cycle}" if cycle else ""))
    if answer["not"]:
        lines.append(f"  not {', '.join(answer['not'])}" + (f" (nor {', '.join(answer['also_not'])})"
                                                            if answer["also_not"] else ""))
    return lines


def format_summary(report: Report) -> str:
    lines = [
        "",
        "=" * 100,
        f"toolclash run {report['run']['run_id']}: {', '.join(report['run']['scenarios'])}"
        f" at {report['run']['isolation']}, {report['run']['agents']} agents, {report['run']['duration_s']:.1f} s,"
        f" seed {report['run']['seed']} (the same calls again: --seed {report['run']['seed']})",
    ]
    lines += [f"  {server['description']}" for server in report["servers"]]
    lines += _transport_lines(report)
    if "workers" in report:
        expected, ran = report["run"]["settings_fingerprint"], report["workers"]["settings"]
        others = sorted(worker for worker, fingerprint in ran.items() if fingerprint != expected)
        lines.append(f"  settings {expected}: {len(ran) - len(others)} worker(s) ran with them"
                     + (f", NOT {', '.join(others)}" if others else ""))
    lines.append("")
    header = (f"{'tool':<24}{'calls':>9}{'ok':>9}{'failed':>8}{'refused':>8}{'indet.':>7}{'cut off':>8}{'retries':>9}"
              f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    lines.append(header)
    for name, tool in report["tools"].items():
        lines.append(
            f"{name:<24}{tool['calls']:>9}{tool['succeeded']:>9}{tool['failed']:>8}{tool['refused']:>8}{tool['indeterminate']:>7}"
            f"{tool['cut_off']:>8}{tool['retries']:>9}{_ms(tool['p50_ms']):>9}{_ms(tool['p95_ms']):>9}{_ms(tool['p99_ms']):>9}"
        )
    lines.append("")
    lines.append("conflicts: " + ", ".join(f"{k}={v}" for k, v in report["conflicts"].items())
                 + f", errors={report['errors']}")
    lines.append("anomalies: " + ", ".join(f"{k}={v}" for k, v in report["anomalies"].items()))
    lines.append(_turns_line(report))
    if ran_workflows(report):
        lines.append(_workflows_line(report))
    if report.get("faults"):
        lines.append(_faults_line(report))
    lines.append(_hub_line(report["hub"]))
    lines.append(_pool_line(report))
    server = report["server_counters"]
    lines.append(
        "server (pg_stat_database, over the run): "
        + ", ".join(f"{k}={server[k]}" for k in ("deadlocks", "xact_commit", "xact_rollback", "conflicts"))
    )
    lines.append(f"deadlock_timeout: {server['deadlock_timeout']['note']}")
    lines.append(
        f"server peaks ({server['samples']} samples): lock waiters={server['peak_lock_waiters']},"
        f" longest lock wait={server['longest_lock_wait_ms']} ms,"
        f" longest blocking chain={server['longest_blocking_chain']},"
        f" Redis clients={server['peak_redis_clients']}, Redis ops/s={server['peak_redis_ops_per_sec']},"
        f" Redis rejected connections={server['redis_rejected_connections']}"
    )
    for name, summary in report["latency_ms"].items():
        lines.append(
            f"{name + ' ms':<24} p50={_ms(summary['p50'])} p95={_ms(summary['p95'])}"
            f" p99={_ms(summary['p99'])} max={_ms(summary['max'])} (n={summary['count']})"
        )
    lines.append("")
    lines.append("audit: " + ("ok" if report["audit"]["ok"] else "FAILED")
                 + f" (against the harness's baseline: {', '.join(f'{k}={v}' for k, v in report['baseline'].items())})")
    if report["not_audited_by_identity"]:
        lines.append(f"  [WARN] not audited by identity (no check compared their calls with the servers' data):"
                     f" {', '.join(report['not_audited_by_identity'])}")
    for check in report["audit"]["checks"]:
        mark = "ok  " if check["ok"] else "FAIL"
        lines.append(
            f"  [{mark}] {check['name']}: expected {check['expected']}, observed {check['observed']}"
            + (f" ({check['detail']})" if check["detail"] else "")
        )
    lines += _history_check_lines(report)
    lines.append("SLA:")
    lines += [_sla_line(rule) for rule in report["sla"]]
    if report.get("stages"):
        lines.append("")
        lines.append(f"{'stage':<7}{'agents':>7}{'calls/s':>10}{'p95 ms':>9}{'conflicts':>11}{'pool wait p95':>15}"
                     f"{'turns':>8}{'turn p95':>10}{'w/ conflicts':>14}  SLAs")
        for stage in report["stages"]:
            failed = [r["name"] for r in stage["sla"] if not r["ok"]]
            lines.append(
                f"{stage['stage']:<7}{stage['agents']:>7}{stage['throughput_per_s']:>10.1f}{_ms(stage['p95_ms']):>9}"
                f"{_figure(stage['conflict_rate']):>11}{_ms(stage['pool_wait_p95_ms']):>15}"
                f"{stage['turns']:>8}{_ms(stage['turn_p95_ms']):>10}{stage['turns_with_conflicts']:>14}  "
                + ("held" if not failed else "BROKEN: " + ", ".join(failed))
            )
    if report["evidence"]["notes"]:
        lines.append("")
        lines.append("warnings (the verdict does not rest on them):")
        lines += [f"  [WARN] {note['kind']}: {note['detail']}" for note in report["evidence"]["notes"]]
    if report["evidence"]["problems"]:
        lines.append("")
        lines.append("the run is not evidence enough to pass:")
        lines += [f"  [FAIL] {problem['kind']}: {problem['detail']}" for problem in report["evidence"]["problems"]]
    lines.append("")
    lines.append(f"verdict: {report['verdict'].upper()}")
    lines.append("=" * 100)
    return "\n".join(lines)


def log_summary(report: Report) -> None:
    """The summary through `logging` too, one record per line (Locust's Logs tab shows each
    record as a line of its own, and its log file gets them), but not to the console: the summary
    is printed there already. A FAIL verdict and the warnings are warnings, so the Logs tab marks
    them."""
    _summary_log.propagate = False
    _summary_log.handlers = [handler for handler in logging.getLogger().handlers
                             if not (isinstance(handler, logging.StreamHandler)
                                     and getattr(handler, "stream", None) in (sys.stdout, sys.stderr))]
    _summary_log.setLevel(logging.INFO)
    for line in format_summary(report).splitlines():
        if line.strip() and not line.startswith("="):
            alarming = line.startswith(("verdict: FAIL", "  [WARN]"))
            _summary_log.log(logging.WARNING if alarming else logging.INFO, "%s", line)


def publish(report: dict[str, Any], json_path: str | None, junit_path: str | None) -> None:
    """An audited test's report: its summary on the console and in the log, each configuration
    error on stderr (one line each, as at start), and the files asked for (--report-json,
    --junit-xml)."""
    print(format_summary(report), flush=True)
    log_summary(report)
    for message in configuration_errors(report):
        print(f"toolclash: error: {message}", file=sys.stderr, flush=True)
    if json_path:
        write_json(report, json_path)
    if junit_path:
        write_junit(report, junit_path)
