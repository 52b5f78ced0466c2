"""The section's first block: the verdict, one line per thing it rests on (the evidence, the audit,
the SLAs, and the warnings it does not rest on), and the run's facts."""

from __future__ import annotations

from html import escape
from typing import Any

from harness.config.sla import METRICS
from harness.output.html.figures import DASH, _by_kind, _label, _seconds

__all__ = ["_verdict"]


def _why(report: dict[str, Any]) -> list[str]:
    """One line per thing the verdict rests on: the evidence, the audit, the SLAs."""
    lines = []
    problems = report["evidence"]["problems"]
    if problems:
        lines.append("<span class='tc-fail'>Not evidence enough to pass:</span> "
                     + "; ".join(f"{escape(p['kind'])}: {escape(p['detail'])}" for p in problems))
    checks = report["audit"]["checks"]
    failed_checks = [c["name"] for c in checks if not c["ok"]]
    anomalies = {k: v for k, v in report["anomalies"].items() if v}
    if failed_checks or anomalies:
        found = [f"{_label(k)} {v:,}" for k, v in anomalies.items()]
        lines.append("<span class='tc-fail'>Audit failed:</span> "
                     + ", ".join([escape(n) for n in failed_checks] + found))
    else:
        lines.append(f"<span class='tc-ok'>Audit ok:</span> {len(checks)} checks held, no anomaly")
    rules = report["sla"]
    broken = [r for r in rules if not r["ok"]]
    kinds = {r["metric"]: METRICS[r["metric"]].kind if r["metric"] in METRICS else "count" for r in rules}
    if broken:
        lines.append(f"<span class='tc-fail'>SLAs: {len(broken)} of {len(rules)} broken:</span> "
                     + "; ".join(f"{escape(r['name'])} (observed {_by_kind(kinds[r['metric']], r['observed'])})"
                                 for r in broken))
    else:
        lines.append(f"<span class='tc-ok'>SLAs: all {len(rules)} held</span>")
    lines += [f"<span class='tc-warn'>Warning (the verdict does not rest on it):</span> {escape(note['detail'])}"
              for note in report["evidence"]["notes"]]
    return lines


def _transport_facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Over MCP: the server and the protocol; what the MCP layer counted; what it cannot see."""
    mcp = report.get("transport", {}).get("mcp")
    if mcp is None:
        return [("Transport", "in process: the tools ran in the load's own processes")]
    info = " ".join(str(mcp["server_info"].get(key, "")) for key in ("name", "version")).strip() or "unnamed"
    server = DASH if mcp["attempts"]["server"] is None else f"{mcp['attempts']['server']:,}"
    return [
        ("Transport", escape(f"MCP at {mcp['url']} ({mcp['server']} server {info}), {mcp['era']} era"
                             f" {mcp['protocol_version']}")),
        ("MCP layer", escape(f"sessions opened {mcp['sessions']['opened']:,}, renewed {mcp['sessions']['renewed']:,},"
                             f" closed {mcp['sessions']['closed']:,}; replies {mcp['replies']['json']:,} JSON,"
                             f" {mcp['replies']['event_stream']:,} event streams; {mcp['is_error_replies']:,} isError,"
                             f" {mcp['reissues']:,} re-issued; attempts: client {mcp['attempts']['client']:,},"
                             f" server {server}")),
        ("Not measurable over MCP", escape("; ".join(f"{item['figure']}: {item['why']}"
                                                     for item in mcp["not_measurable"]))),
    ]


def _verdict(report: dict[str, Any]) -> str:
    run = report["run"]
    passed = report["verdict"] == "pass"
    word = escape(report["verdict"].upper())
    facts = [
        ("Run", f"{escape(run['run_id'])}, started {escape(str(run.get('started_at', DASH)))}"),
        ("Scenarios", escape(", ".join(run["scenarios"]))),
        ("Isolation", escape(run["isolation"])),
        ("Agents", f"{run['agents']:,} (peak)"),
        ("Duration", _seconds(run["duration_s"])),
        ("Seed", f"{run['seed']} (the same calls again: --seed {run['seed']})"),
        ("Schema", escape(run["schema"])),
    ]
    facts += [("Server", escape(s["description"])) for s in report["servers"]]
    facts += _transport_facts(report)
    facts.append(("deadlock_timeout", escape(report["server_counters"]["deadlock_timeout"]["note"])))
    if report.get("workers"):
        workers = report["workers"]
        facts.append(("Workers", f"{len(workers['shipped'])} shipped their figures, {len(workers['lost'])} lost"))
    return (
        f"<div class='tc-paper tc-verdict' data-part='verdict' data-verdict='{escape(report['verdict'])}'>"
        f"<h2>toolclash verdict: <span class='{'tc-ok' if passed else 'tc-fail'}' data-verdict-word>{word}</span></h2>"
        f"<p class='tc-note'>exit code {report['exit_code']}</p>"
        "<ul>" + "".join(f"<li>{line}</li>" for line in _why(report)) + "</ul>"
        "<div class='tc-facts'>"
        + "".join(f"<p><b>{escape(k)}:</b> {v}</p>" for k, v in facts)
        + "</div></div>"
    )
