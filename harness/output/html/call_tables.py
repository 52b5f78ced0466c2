"""The section's tables of what the calls did: per tool, the conflicts and anomalies, the
distributions (deadlock detection and resolution, pool wait, queue wait, cross-service window),
each stage of a load shape, and the SLAs."""

from __future__ import annotations

from html import escape
from typing import Any

from harness.config.sla import METRICS
from harness.output.html.figures import DASH, _by_kind, _label, _ms, _number, _percent, _seconds
from harness.output.html.markup import _block, _cell, _mark, _note, _row, _table
from harness.watch.workflow_stats import ran_workflows

__all__ = ["_conflicts_and_anomalies", "_distributions", "_sla", "_stages", "_tools", "_turns", "_workflows"]


def _tools(report: dict[str, Any]) -> str:
    tools = report["tools"]
    if not tools:
        return _block("Tool Calls", f"<p>{_note('No tool call was made.')}</p>", "tools")
    with_interrupted = any(t["interrupted"] for t in tools.values())
    headers = ["Tool", "Calls", "Succeeded", "Failed", "Refused", "Indeterminate", "Cut off"]
    headers += ["Interrupted"] if with_interrupted else []
    headers += ["Attempts", "Retries", "p50 (ms)", "p95 (ms)", "p99 (ms)", "Max (ms)", "Failed attempts"]
    rows = []
    for name, t in tools.items():
        failures = ", ".join(f"{_label(k)} {v:,}" for k, v in t["failures"].items()) or _note("none")
        cells = [_cell(escape(name)), _cell(_number(t["calls"]), True), _cell(_number(t["succeeded"]), True),
                 _cell(_number(t["failed"]), True, "tc-fail" if t["failed"] > t["refused"] else ""),
                 _cell(_number(t["refused"]), True),
                 _cell(_number(t["indeterminate"]), True, "tc-fail" if t["indeterminate"] else ""),
                 _cell(_number(t["cut_off"]), True)]
        if with_interrupted:
            cells.append(_cell(_number(t["interrupted"]), True))
        cells += [_cell(_number(t["attempts"]), True), _cell(_number(t["retries"]), True)]
        cells += [_cell(_number(t[k]), True) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
        cells.append(_cell(failures))
        rows.append(_row(*cells))
    note = ("<p class='tc-note'>Latency of a call, retries included; failed attempts by kind. Refused: the tool's own"
            " answer \"no\" (a full queue, an account that cannot pay), a part of the failed calls that is no failure"
            " of the platform: success rates leave it out. Indeterminate: the platform left the outcome unknown (a"
            " connection or a reply lost while the call was applied). Cut off: the run's own stop did (an agent stopped"
            " while its call was applied); the audits allow both applied or not, and success rates leave cut-off calls"
            " out.</p>")
    return _block("Tool Calls", _table("tools", headers, rows) + note, "tools")


def _conflicts_and_anomalies(report: dict[str, Any]) -> str:
    attempts = sum(t["attempts"] for t in report["tools"].values())
    rows = [_row(_cell(_label(k)), _cell(_number(v), True),
                 _cell(_percent(v / attempts) if attempts else _note(f"{DASH} (no attempt)"), True))
            for k, v in report["conflicts"].items()]
    rows.append(_row(_cell("errors " + _note("(bugs, constraint violations)")), _cell(_number(report["errors"]), True),
                     _cell(_percent(report["errors"] / attempts) if attempts else DASH, True)))
    conflicts = _block("Conflicts", _table("conflicts", ["Counter", "Count", "Per attempt"], rows), "conflicts")
    rows = [_row(_cell(_label(k)), _cell(_number(v), True, "tc-fail" if v else ""))
            for k, v in report["anomalies"].items()]
    anomalies = _block("Anomalies", _table("anomalies", ["Anomaly", "Count"], rows), "anomalies")
    return f"<div class='tc-pair'>{conflicts}{anomalies}</div>"


_DISTRIBUTIONS = {
    "deadlock_detection": ("deadlock detection", "from the victim's statement to PostgreSQL's deadlock error",
                           "no deadlock was detected in this run", None),
    "deadlock_resolution": ("deadlock resolution", "from a call's first deadlock to its success (or its end)",
                            "no call met a deadlock in this run", None),
    "pool_wait": ("pool wait", "waiting for a connection from the pool (pool timeouts included)",
                  "no connection was taken from a pool", None),
    "queue_wait": ("queue wait", "a job's time in the queue, from enqueue to dequeue",
                   "no job was dequeued", "queue"),
    "cross_service_window": ("cross-service window", "from PostgreSQL's COMMIT to the Redis apply",
                             "no usage was applied to Redis", "cross_service"),
}


def _distributions(report: dict[str, Any]) -> str:
    latency = report["latency_ms"]
    scenarios = report["run"]["scenarios"]
    rows = []
    for name in [*_DISTRIBUTIONS, *(n for n in latency if n not in _DISTRIBUTIONS)]:
        title, measures, none_why, scenario = _DISTRIBUTIONS.get(
            name, (name.replace("_", " "), "observed by a tool", "", None))
        summary = latency.get(name) or {"count": 0}
        head = [_cell(f"{escape(title)}<br>{_note(escape(measures))}"), _cell(_number(summary["count"]), True)]
        if summary["count"]:
            rows.append(_row(*head, *(_cell(_number(summary[k]), True) for k in ("p50", "p95", "p99", "max"))))
        else:
            if scenario and scenario not in scenarios:
                none_why += f" (the {scenario} scenario did not run)"
            rows.append(_row(*head, _cell(f"{DASH} {_note(escape(none_why))}", span=4)))
    headers = ["Distribution", "Samples", "p50 (ms)", "p95 (ms)", "p99 (ms)", "Max (ms)"]
    return _block("Distributions", _table("distributions", headers, rows), "distributions")


def _turns(report: dict[str, Any]) -> str:
    """The agents' turns: how many calls each made, what the agent waited for, its own calls'
    conflicts and collisions (docs/agents.md, Turns)."""
    turns = report["turns"]
    latency = turns["latency_ms"]
    sizes = ", ".join(f"{escape(calls)}: {_number(count)}" for calls, count in turns["calls_per_turn"].items())
    rows = [_row(_cell(escape(label) + (f"<br>{_note(escape(why))}" if why else "")), _cell(value, True))
            for label, why, value in (
                ("turns", "finished (a turn its agent was stopped in is not counted)", _number(turns["turns"])),
                ("turns by calls", "calls per turn: turns", sizes or DASH),
                *((f"turn latency {k}", "from the batch's start to its last call's end" if k == "p50" else "",
                   _ms(latency[k])) for k in ("p50", "p95", "p99", "max")),
                ("turns with conflicts", "a call of the turn met a failed attempt of a conflict kind",
                 _number(turns["with_conflicts"])),
                ("same-key pairs", "later calls that took an earlier call's key (--same-key)",
                 _number(turns["same_key_pairs"])),
                ("overlapping same-key pairs", "two calls of a turn sharing a key, overlapping in time",
                 _number(turns["overlapping_same_key_pairs"])),
                ("collisions", "of those, pairs at least one of whose calls met a conflict",
                 _number(turns["collisions"])),
            )]
    return _block("Turns", _table("turns", ["Figure", "Value"], rows), "turns")


# The workflows table's statistics of versions behind and of ms since the read.
_SPREAD = ("p50", "p95", "max")


def _workflows(report: dict[str, Any]) -> str:
    """The workflows' writes from their agents' reads, per write tool and in all: how many wrote
    from a stale read, how stale (docs/agents.md, Workflows across turns); only in a run with
    workflows."""
    if not ran_workflows(report):
        return ""
    workflows = report["workflows"]
    rows = [_workflow_row(escape(name), figures) for name, figures in workflows["tools"].items()]
    rows.append(_workflow_row("<b>all write tools</b>", workflows))
    headers = ["Write tool", "Writes from reads", "From stale reads", *(f"Versions behind {k}" for k in _SPREAD),
               *(f"Since the read {k}" for k in _SPREAD)]
    note = ("<p class='tc-note'>Succeeded writes computed from what their agent read in an earlier turn. From a stale"
            " read: the data had moved since (versions written meanwhile, or the job gone). Versions behind: n/a"
            " where the tool's data has no versions (the queue's); in all, over the writes that say them. Since the"
            " read: the server's clock, from the read to the write. The audit names each lost update by op id.</p>")
    return _block("Workflows", _table("workflows", headers, rows) + note, "workflows")


def _workflow_row(label: str, figures: dict[str, Any]) -> str:
    writes, stale = figures["writes"], figures["stale_writes"]
    share = f" {_note(f'({_percent(stale / writes)})')}" if writes else ""
    behind = figures["behind_versions"]
    versions = ([_cell(_number(behind[k]), True) for k in _SPREAD] if behind is not None
                else [_cell(f"n/a {_note('(no versions)')}", True, span=len(_SPREAD))])
    since = [_cell(_ms(figures["stale_ms"][k]), True) for k in _SPREAD]
    return _row(_cell(label), _cell(_number(writes), True), _cell(_number(stale) + share, True,
                                                                   "tc-fail" if stale else ""),
                *versions, *since)


def _stages(report: dict[str, Any]) -> str:
    stages = report.get("stages")
    if not stages:
        return ""
    rows = []
    for stage in stages:
        broken = [r["name"] for r in stage["sla"] if not r["ok"]]
        slas = _mark(True, "held") if not broken else (
            "<span class='tc-fail'>BROKEN:</span> " + escape(", ".join(broken)))
        rate = stage["conflict_rate"]
        rows.append(_row(
            _cell(_number(stage["stage"]), True), _cell(_number(stage["agents"]), True),
            _cell(_seconds(stage["duration_s"]), True), _cell(_number(stage["calls"]), True),
            _cell(_number(stage["throughput_per_s"]), True),
            _cell(_ms(stage["p95_ms"]) if stage["p95_ms"] is not None else f"{DASH} {_note('(no call)')}", True),
            _cell(_percent(rate) if rate is not None else f"{DASH} {_note('(no attempt)')}", True),
            _cell(_ms(stage["pool_wait_p95_ms"]) if stage["pool_wait_p95_ms"] is not None
                  else f"{DASH} {_note('(no pool wait)')}", True),
            *_stage_turns(stage),
            _cell(slas)))
    note = ("<p class='tc-note'>The SLAs checked over each stage's calls and turns; the audits are of the whole"
            " run.</p>")
    return _block("Per Stage", _table("stages", ["Stage", "Agents", "Duration", "Calls", "Calls/s", "p95",
                                                "Conflict rate", "Pool wait p95", "Turns", "Turn p95",
                                                "Turns with conflicts", "SLAs"], rows) + note, "stages")


def _stage_turns(stage: dict[str, Any]) -> list[str]:
    """A stage's turns, and the figures its per-turn SLA rules read: turn p95, turns with conflicts."""
    turns = stage["turns"]
    if not turns:
        return [_cell(_number(turns), True), _cell(f"{DASH} {_note('(no turn)')}", True, span=2)]
    share = _percent(stage["turns_with_conflicts"] / turns)
    return [_cell(_number(turns), True), _cell(_ms(stage["turn_p95_ms"]), True),
            _cell(f"{_number(stage['turns_with_conflicts'])} {_note(f'({share})')}", True)]


def _unobserved(rule: dict[str, Any]) -> str:
    """Why an SLA's figure is missing, and what that means for the rule."""
    if rule.get("not_measurable"):
        why = f"(not measurable over MCP: {rule['not_measurable']}; the rule fails)"
        return f"{DASH} {_note(escape(why))}"
    metric = rule["metric"]
    for name, (_title, _measures, none_why, _scenario) in _DISTRIBUTIONS.items():
        if metric.startswith(name + "_"):
            why = none_why
            break
    else:
        scope = f" of {rule['scope']}" if rule["scope"] else ""
        if metric == "deadlocks_per_minute":
            why = "the run lasted no time"
        elif metric.startswith("turn"):
            why = "no turn finished"
        elif metric.startswith("tool_"):
            why = f"no call{scope} finished"
        elif metric.endswith("_per_attempt"):
            why = f"no attempt{scope}"
        else:
            why = f"no call{scope}"
    meaning = "nothing to hold, so the rule holds" if rule["ok"] else "a rule about calls fails without any"
    return f"{DASH} {_note(escape(f'({why}: {meaning})'))}"


def _sla(report: dict[str, Any]) -> str:
    rows = []
    for rule in report["sla"]:
        kind = METRICS[rule["metric"]].kind if rule["metric"] in METRICS else "count"
        observed = _by_kind(kind, rule["observed"]) if rule["observed"] is not None else _unobserved(rule)
        rows.append(_row(_cell(escape(rule["name"])), _cell(observed, rule["observed"] is not None),
                         _cell(f"{escape(rule['op'])} {_by_kind(kind, rule['threshold'])}", True),
                         _cell(_mark(rule["ok"]))))
    if not rows:
        return _block("SLAs", f"<p>{_note('No SLA rule.')}</p>", "sla")
    return _block("SLAs", _table("sla", ["Rule", "Observed", "Needs", "Result"], rows), "sla")
