"""The verdict, and the evidence it needs before it may say PASS.

A run passes only when its data backs it: the audits held, every SLA rule held, and the run is
evidence at all. It is not when a load process never started, when agents raised instead of
finishing their calls, when no tool call was made, when a worker vanished with calls whose
outcome nobody reported, when a worker's shipment of outcomes never reached the master, when a
session of the load was still open at the audit (what it may yet commit is not in the audited
data), or when a tool raised an error (neither a conflict nor its own refusal: a bug, a missing
table, a constraint): a run whose tools fail is no evidence that the platform holds; nor is one
whose audit judges by identity and found none of the run's op ids where the calls wrote (the
server that wrote there does not store them: `op_ids_not_stored`). The server
refusing the run's connections is the run's configuration, not a verdict on the platform: exit
code 2, like a bad option.

The report's `evidence.notes` are what a reader must know but the verdict does not rest on: a
harness whose event loop fell behind (harness.watch.hub_lag) measured latencies that include its own
delay, yet its calls and the audits of them are the run's; a latency SLA that the delay breaks
fails on its own figures.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from harness.config.settings import Settings
from harness.report_shape import Finding, Report, SlaResult, Verdict, Workers
from harness.watch.metrics import Metrics

__all__ = ["CONFIGURATION_ERROR", "PASS", "FAIL", "configuration_errors", "decide", "evidence_problems",
           "op_ids_not_stored", "settings_problems", "user_server_notes"]

PASS: Final = "pass"
FAIL: Final = "fail"
CONFIGURATION_ERROR = 2
_EXIT_CODES = {PASS: 0, FAIL: 1}

# Problems that say the run was set up wrong (fix the options or the server, then run again).
_CONFIGURATION_KINDS = frozenset({"server_refused", "worker_refused", "mcp_unavailable"})


def evidence_problems(metrics: Metrics, workers: Workers | None = None,
                      load_sessions_left: int = 0) -> list[Finding]:
    """What keeps the run from being evidence, each as {kind, detail}; empty when nothing does.
    `workers`: in a distributed run, the report's `workers` (lost workers, lost shipments);
    `load_sessions_left`: the load's sessions still open when the audits began."""
    problems: list[Finding] = [{"kind": f["kind"], "detail": f["detail"]} for f in metrics.load_failures]
    if metrics.agent_errors:
        problems.append({
            "kind": "agent_errors",
            "detail": f"{metrics.agent_errors} agent tasks raised instead of finishing their tool call"
                      f" (a harness or tools-module bug), e.g. {metrics.agent_error_samples[0]}",
        })
    if metrics.errors:
        problems.append({
            "kind": "tool_errors",
            "detail": f"{metrics.errors} tool call attempts raised an error that is neither a conflict nor the tool's"
                      f" own refusal (a missing table, a constraint, a bug), e.g. {metrics.error_samples[0]}",
        })
    if not any(stats.calls for stats in metrics.tools.values()):
        problems.append({"kind": "no_calls", "detail": "no tool call was made: there is nothing to judge"})
    for gone in workers["lost"] if workers else ():
        problems.append({
            "kind": "worker_lost",
            "detail": f"worker {gone['worker']} vanished ({gone['state']}); the outcomes of its calls since"
                      f" its last shipment ({gone['last_shipment_at'] or 'none'}) are unknown",
        })
    for worker, lost in (workers["shipments_lost"] if workers else {}).items():
        if lost:
            problems.append({
                "kind": "shipment_lost",
                "detail": f"{lost} shipment(s) of worker {worker} never reached the master: the outcomes of the calls"
                          " they carried are unknown, and their succeeded calls are missing from what the audits"
                          " compare with the servers",
            })
    if load_sessions_left:
        problems.append({
            "kind": "load_sessions_left",
            "detail": f"{load_sessions_left} session(s) of the load were still open when the audits began: what they"
                      " may yet commit is not in the data the audits read",
        })
    return problems


def user_server_notes(settings: Settings) -> list[Finding]:
    """Over a user's MCP server (--mcp-url), what the harness cannot see and the reader must know:
    the audits take the server to run at --isolation and with --queue-capacity (they judge by
    them), and whether a call the server still ran at the audit committed after it is unknown."""
    return [
        {"kind": "server_settings_unseen",
         "detail": f"the audits take your MCP server to run its tools at --isolation {settings.isolation} with"
                   f" --queue-capacity {settings.params.queue_capacity}: toolclash cannot see the server's own"},
        {"kind": "server_sessions_unseen",
         "detail": "your MCP server's PostgreSQL sessions are its own: whether a call it still ran when the audits"
                   " read the data committed after is not known (the calls the agents gave up on are counted"
                   " indeterminate, and those the run's stop ended cut off)"},
    ]


def op_ids_not_stored(audit: str, exc: Exception, tools: Collection[str]) -> Finding:
    """An audit that judges by identity found a table (or the queue) holding none of the run's op
    ids (the server that wrote it does not store them: over --mcp-url, the user's): none of its
    checks could be made, not even those that need no op id, and the run is no evidence by
    identity."""
    return {"kind": "op_ids_not_stored",
            "detail": f"the audit {audit} judges by identity, and {exc}: the server that wrote them does not store"
                      f" toolclash's op id, so its checks were not made ({', '.join(sorted(tools))}: not audited by"
                      " identity); store each call's op id in its tool's own transaction (docs/mcp.md, your own"
                      " server)"}


def settings_problems(worker_settings: dict[str, str], expected: str) -> list[Finding]:
    """A worker that ran the test with other settings than the master's (fingerprints of
    harness.config.run_settings): its calls are not those of the run the report describes."""
    return [{"kind": "settings_mismatch",
             "detail": f"worker {worker} ran with settings {theirs}, not the master's {expected}: the report would"
                       " describe a run that did not happen"}
            for worker, theirs in sorted(worker_settings.items()) if theirs != expected]


def decide(problems: list[Finding], audit_ok: bool, sla_results: list[SlaResult]) -> tuple[Verdict, int]:
    """(verdict, exit code) from the evidence's problems, the audit and the SLA results."""
    if any(p["kind"] in _CONFIGURATION_KINDS for p in problems):
        return FAIL, CONFIGURATION_ERROR
    passed = not problems and audit_ok and all(rule["ok"] for rule in sla_results)
    verdict: Verdict = PASS if passed else FAIL
    return verdict, _EXIT_CODES[verdict]


def configuration_errors(report: Report) -> list[str]:
    """The one-line messages to print for a run that ended on its configuration."""
    return [p["detail"] for p in report["evidence"]["problems"] if p["kind"] in _CONFIGURATION_KINDS]
