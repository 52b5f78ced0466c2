"""toolclash's part of Locust's HTML report: the `--html` file and the web UI's 'Download Report'
(Locust's /stats/report) both carry it.

The section tells the run's story in the order a reader asks: the verdict and why, the tool
calls, the conflicts and anomalies, the distributions (deadlock detection and resolution, pool
wait, queue wait, cross-service window), the per-stage figures of a load shape, the SLAs, the
audit, the servers' figures and the time series the harness sampled, drawn as inline SVG.

Locust's report is a React page (MUI) rendered in the browser into #root: a few lines of script
move the section, rendered here on the server, right after Locust's summary (the "During / Target
Host / Script" lines) once the page has rendered, and give it the page's theme (light or dark, as
Locust chose it). Without script the section stays whole at the page's end. Nothing is fetched:
the page works offline.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from harness.config.sla import METRICS
from harness.report_shape import Report

__all__ = ["SECTION_ID", "add_to_html_report", "insert_section", "install_on_web_ui", "pending_section", "section"]

SECTION_ID = "toolclash-report"
DASH = "\u2014"

# Locust's palette (MUI's, and its charts' ECharts theme), light and dark: the section follows
# whichever the page shows.
_STYLE = """
#toolclash-report{--tc-text:rgba(0,0,0,.87);--tc-text2:rgba(0,0,0,.6);--tc-line:rgb(224,224,224);
 --tc-paper:#fff;--tc-paper-img:none;--tc-ok:#2e7d32;--tc-fail:#d32f2f;--tc-warn:#ed6c02;--tc-link:#15803d;
 --tc-chart-bg:#fff;--tc-chart-text:#000;--tc-axis:#000;--tc-split:#ddd;--tc-label:#6e7079;
 --tc-shadow:rgba(0,0,0,.2) 0 2px 1px -1px,rgba(0,0,0,.14) 0 1px 1px 0,rgba(0,0,0,.12) 0 1px 3px 0;
 color:var(--tc-text);font-family:Roboto,Helvetica,Arial,sans-serif;font-size:1rem;line-height:1.5;
 display:flex;flex-direction:column;row-gap:32px;margin:24px 0 40px}
#toolclash-report[data-mode=dark]{--tc-text:#fff;--tc-text2:rgba(255,255,255,.7);--tc-line:rgb(81,81,81);
 --tc-paper:#121212;--tc-paper-img:linear-gradient(rgba(255,255,255,.05),rgba(255,255,255,.05));
 --tc-ok:#66bb6a;--tc-fail:#f44336;--tc-warn:#ffa726;--tc-link:#4ade80;
 --tc-chart-bg:#27272a;--tc-chart-text:#b3c3bc;--tc-axis:#5b6f66;--tc-split:#4c4c52;--tc-label:#b3c3bc}
#toolclash-report h2{font-size:2.125rem;font-weight:400;line-height:1.235;letter-spacing:.00735em;margin:0 0 8px}
#toolclash-report h3{font-size:1.25rem;font-weight:500;line-height:1.6;margin:0 0 8px}
#toolclash-report p{margin:0}
#toolclash-report .tc-paper{background-color:var(--tc-paper);background-image:var(--tc-paper-img);
 border-radius:4px;box-shadow:var(--tc-shadow);overflow-x:auto}
#toolclash-report table{width:100%;border-collapse:collapse;border-spacing:0;font-size:.875rem}
#toolclash-report th,#toolclash-report td{padding:16px;text-align:left;vertical-align:top;
 border-bottom:1px solid var(--tc-line);color:var(--tc-text)}
#toolclash-report th{font-weight:500;line-height:1.5rem}
#toolclash-report td{font-weight:400;line-height:1.43}
#toolclash-report td.tc-num{white-space:nowrap;font-variant-numeric:tabular-nums}
#toolclash-report .tc-note{color:var(--tc-text2)}
#toolclash-report .tc-ok{color:var(--tc-ok);font-weight:500}
#toolclash-report .tc-fail{color:var(--tc-fail);font-weight:500}
#toolclash-report .tc-warn{color:var(--tc-warn);font-weight:500}
#toolclash-report .tc-pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:32px}
#toolclash-report .tc-stack{display:flex;flex-direction:column;row-gap:32px}
#toolclash-report .tc-verdict{padding:16px 24px;border-left:6px solid var(--tc-ok)}
#toolclash-report .tc-verdict[data-verdict=fail]{border-left-color:var(--tc-fail)}
#toolclash-report .tc-verdict[data-verdict=none]{border-left-color:var(--tc-text2)}
#toolclash-report .tc-verdict h2,#toolclash-report .tc-verdict h2 span{font-weight:700}
#toolclash-report .tc-verdict ul{margin:8px 0 16px;padding-left:20px}
#toolclash-report .tc-facts{display:flex;flex-direction:column}
#toolclash-report .tc-facts b{font-weight:600}
#toolclash-report .tc-charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
#toolclash-report figure{margin:0;padding:0;background:var(--tc-chart-bg);border-radius:4px;box-shadow:var(--tc-shadow)}
#toolclash-report svg{display:block;width:100%;height:auto}
#toolclash-report svg text{font-family:Roboto,Helvetica,Arial,sans-serif;fill:var(--tc-label);font-size:12px}
#toolclash-report svg text.tc-title{fill:var(--tc-chart-text);font-size:17px;font-weight:700}
#toolclash-report svg text.tc-legend{fill:var(--tc-chart-text)}
#toolclash-report svg .tc-split{stroke:var(--tc-split);stroke-width:1}
#toolclash-report svg .tc-axis{stroke:var(--tc-axis);stroke-width:1}
#toolclash-report svg .tc-fault{stroke:var(--tc-fail);stroke-width:1;stroke-dasharray:4 3}
#toolclash-report svg text.tc-empty{fill:var(--tc-text2);font-size:14px}
"""

# Runs where the section is in the page: moves it after Locust's summary once React has drawn
# the page, and gives it the page's theme (the body's background; else Locust's own choice:
# window.theme, localStorage.theme, the system's preference).
_SCRIPT = """
(function () {
  var section = document.getElementById("%(id)s");
  if (!section) return;
  function chosenMode() {
    var stored = null;
    try { stored = window.localStorage.getItem("theme"); } catch (e) {}
    if (window.theme) return window.theme === "dark" ? "dark" : "light";
    if (stored) return stored === "dark" ? "dark" : "light";
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function shownMode() {
    var color = getComputedStyle(document.body).backgroundColor;
    var m = /rgba?\\((\\d+),\\s*(\\d+),\\s*(\\d+)(?:,\\s*([\\d.]+))?/.exec(color);
    if (!m || m[4] === "0") return null;
    return 0.299 * m[1] + 0.587 * m[2] + 0.114 * m[3] < 128 ? "dark" : "light";
  }
  section.setAttribute("data-mode", chosenMode());
  function place() {
    var titles = document.querySelectorAll("#root h1"), title = null;
    for (var i = 0; i < titles.length; i++) if (/Locust/.test(titles[i].textContent)) title = titles[i];
    var summary = title && title.parentElement && title.parentElement.nextElementSibling;
    if (!summary) return false;
    summary.parentNode.insertBefore(section, summary.nextSibling);
    section.setAttribute("data-placed", "after-summary");
    section.setAttribute("data-mode", shownMode() || chosenMode());
    return true;
  }
  if (!place()) {
    var observer = new MutationObserver(function () { if (place()) observer.disconnect(); });
    observer.observe(document.getElementById("root") || document.body, {childList: true, subtree: true});
  }
})();
"""


# -- figures --------------------------------------------------------------------------------

def _number(value: Any) -> str:
    """A figure for a reader: thousands separated, at most two decimals, never `None`."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return DASH
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        size = abs(value)
        if size >= 100:
            return f"{value:,.0f}"
        if size >= 10:
            return f"{value:.1f}"
        if size >= 0.01:
            return f"{value:.2f}"
        return "&lt;0.01" if value > 0 else "&gt;-0.01"
    return escape(str(value))


def _ms(value: Any) -> str:
    return DASH if value is None else f"{_number(value)} ms"


def _percent(value: float | None) -> str:
    if value is None:
        return DASH
    percent = value * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%" if percent == int(percent) else f"{percent:.1f}%"
    if percent >= 0.1:
        return f"{percent:.1f}%"
    return "&lt;0.1%"


def _seconds(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 120:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds} s"
    return f"{value:.1f} s"


def _by_kind(kind: str, value: float | None) -> str:
    """An SLA figure in its metric's unit."""
    if value is None:
        return DASH
    if kind == "ms":
        return _ms(value)
    if kind == "rate":
        return _percent(value)
    if kind == "per_minute":
        return f"{_number(value)} / min"
    return _number(value)


def _label(key: str) -> str:
    return escape(key.replace("_", " "))


# -- HTML pieces ----------------------------------------------------------------------------

def _cell(content: str, numeric: bool = False, css: str = "", span: int = 1) -> str:
    classes = " ".join(c for c in ("tc-num" if numeric else "", css) if c)
    attributes = (f" class='{classes}'" if classes else "") + (f" colspan='{span}'" if span > 1 else "")
    return f"<td{attributes}>{content}</td>"


def _table(name: str, headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return (f"<div class='tc-paper'><table data-table='{name}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _row(*cells: str) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _mark(ok: bool, yes: str = "ok", no: str = "FAIL") -> str:
    return f"<span class='tc-ok'>{yes}</span>" if ok else f"<span class='tc-fail'>{no}</span>"


def _note(text: str) -> str:
    return f"<span class='tc-note'>{text}</span>"


def _block(title: str, body: str, name: str) -> str:
    return f"<div data-part='{name}'><h2>{escape(title)}</h2>{body}</div>"


# -- the parts ------------------------------------------------------------------------------

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


def _tools(report: dict[str, Any]) -> str:
    tools = report["tools"]
    if not tools:
        return _block("Tool Calls", f"<p>{_note('No tool call was made.')}</p>", "tools")
    with_interrupted = any(t["interrupted"] for t in tools.values())
    headers = ["Tool", "Calls", "Succeeded", "Failed", "Refused", "Indeterminate"]
    headers += ["Interrupted"] if with_interrupted else []
    headers += ["Attempts", "Retries", "p50 (ms)", "p95 (ms)", "p99 (ms)", "Max (ms)", "Failed attempts"]
    rows = []
    for name, t in tools.items():
        failures = ", ".join(f"{_label(k)} {v:,}" for k, v in t["failures"].items()) or _note("none")
        cells = [_cell(escape(name)), _cell(_number(t["calls"]), True), _cell(_number(t["succeeded"]), True),
                 _cell(_number(t["failed"]), True, "tc-fail" if t["failed"] > t["refused"] else ""),
                 _cell(_number(t["refused"]), True),
                 _cell(_number(t["indeterminate"]), True, "tc-fail" if t["indeterminate"] else "")]
        if with_interrupted:
            cells.append(_cell(_number(t["interrupted"]), True))
        cells += [_cell(_number(t["attempts"]), True), _cell(_number(t["retries"]), True)]
        cells += [_cell(_number(t[k]), True) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
        cells.append(_cell(failures))
        rows.append(_row(*cells))
    note = ("<p class='tc-note'>Latency of a call, retries included; failed attempts by kind. Refused: the tool's own"
            " answer \"no\" (a full queue, an account that cannot pay), a part of the failed calls that is no failure"
            " of the platform: success rates leave it out.</p>")
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


def _steps(report: dict[str, Any]) -> str:
    steps = report.get("stages")
    if not steps:
        return ""
    rows = []
    for step in steps:
        broken = [r["name"] for r in step["sla"] if not r["ok"]]
        slas = _mark(True, "held") if not broken else (
            "<span class='tc-fail'>BROKEN:</span> " + escape(", ".join(broken)))
        rate = step["conflict_rate"]
        rows.append(_row(
            _cell(_number(step["stage"]), True), _cell(_number(step["agents"]), True),
            _cell(_seconds(step["duration_s"]), True), _cell(_number(step["calls"]), True),
            _cell(_number(step["throughput_per_s"]), True),
            _cell(_ms(step["p95_ms"]) if step["p95_ms"] is not None else f"{DASH} {_note('(no call)')}", True),
            _cell(_percent(rate) if rate is not None else f"{DASH} {_note('(no attempt)')}", True),
            _cell(_ms(step["pool_wait_p95_ms"]) if step["pool_wait_p95_ms"] is not None
                  else f"{DASH} {_note('(no pool wait)')}", True),
            _cell(slas)))
    note = "<p class='tc-note'>The SLAs checked over each stage's calls; the audits are of the whole run.</p>"
    return _block("Per Stage", _table("steps", ["Stage", "Agents", "Duration", "Calls", "Calls/s", "p95",
                                                "Conflict rate", "Pool wait p95", "SLAs"], rows) + note, "steps")


def _unobserved(rule: dict[str, Any]) -> str:
    """Why an SLA's figure is missing, and what that means for the rule."""
    metric = rule["metric"]
    for name, (_title, _measures, none_why, _scenario) in _DISTRIBUTIONS.items():
        if metric.startswith(name + "_"):
            why = none_why
            break
    else:
        scope = f" of {rule['scope']}" if rule["scope"] else ""
        if metric == "deadlocks_per_minute":
            why = "the run lasted no time"
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


# -- charts ---------------------------------------------------------------------------------

_W, _H = 560, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 20, 62, 30
_MOST_POINTS = 400  # drawn per series; more samples are thinned, keeping each bucket's peak
# Locust's own chart colors.
_COLORS = ("#0099ff", "#ff9f00", "#9966CC", "#ff6d6d", "#00ca5a", "#8E4585", "#8A2BE2", "#E0B0FF")


def _step(span: float, whole: bool, most: int = 4) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving at most `most` steps over `span`
    (at least 1 for whole numbers, 0.001 for others)."""
    if span <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(span / most))
    for factor in (1, 2, 5, 10):
        step = factor * power
        if span / step <= most:
            break
    # The sampled figures are rounded to the thousandth (seconds to the millisecond): a finer
    # step would only label ticks with four decimals between values that cannot differ.
    return max(step, 1.0) if whole else max(step, 0.001)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= _MOST_POINTS:
        return points
    size = math.ceil(len(points) / _MOST_POINTS)
    return [max(points[i:i + size], key=lambda p: p[1]) for i in range(0, len(points), size)]


def _chart(name: str, title: str, series: list[tuple[str, list[tuple[float, float]]]], x_end: float,
           faults: list[dict[str, Any]], unit: str = "", color: str = _COLORS[0]) -> str:
    samples = sum(len(points) for _, points in series)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    parts = [f"<text class='tc-title' x='12' y='26'>{escape(title)}</text>"]
    if not samples:
        parts.append(f"<text class='tc-empty' x='{_W / 2}' y='{_H / 2}' text-anchor='middle'>"
                     "no sample was taken</text>")
        return (f"<figure data-chart='{name}' data-points='0'><svg viewBox='0 0 {_W} {_H}' role='img'"
                f" aria-label='{escape(title)}'>{''.join(parts)}</svg></figure>")
    x_end = max(x_end, max(x for _, points in series for x, _ in points), 1e-9)
    values = [y for _, points in series for _, y in points]
    y_step = _step(max(values), all(y == int(y) for y in values))
    y_top = max(1, math.ceil(max(values) / y_step)) * y_step

    def px(x: float) -> float:
        return round(_LEFT + x / x_end * plot_w, 1)

    def py(y: float) -> float:
        return round(_TOP + plot_h - y / y_top * plot_h, 1)

    for i in range(round(y_top / y_step) + 1):
        value = i * y_step
        parts.append(f"<line class='tc-split' x1='{_LEFT}' x2='{_W - _RIGHT}' y1='{py(value)}' y2='{py(value)}'/>")
        parts.append(f"<text x='{_LEFT - 8}' y='{py(value) + 4}' text-anchor='end'>{_tick(value)}</text>")
    parts.append(f"<line class='tc-axis' x1='{_LEFT}' x2='{_W - _RIGHT}' y1='{py(0)}' y2='{py(0)}'/>")
    scale, unit_x = (60, "min") if x_end >= 600 else (1, "s")  # a long run in minutes
    x_step = _step(x_end / scale, False, 8) * scale
    for i in range(math.floor(x_end / x_step + 1e-9) + 1):
        tick = i * x_step
        parts.append(f"<line class='tc-axis' x1='{px(tick)}' x2='{px(tick)}' y1='{py(0)}' y2='{py(0) + 4}'/>")
        parts.append(f"<text x='{px(tick)}' y='{py(0) + 18}' text-anchor='middle'>"
                     f"{_tick(tick / scale)} {unit_x}</text>")
    for fault in faults:
        if fault.get("at_s") is not None and fault["at_s"] <= x_end:
            x = px(fault["at_s"])
            parts.append(f"<line class='tc-fault' x1='{x}' x2='{x}' y1='{_TOP}' y2='{py(0)}'>"
                         f"<title>{escape(fault['kind'])} at {_seconds(fault['at_s'])}</title></line>")
    legend_x = 12.0
    drawn = 0
    first = _COLORS.index(color) if color in _COLORS else 0
    for index, (label, points) in enumerate(series):
        color = _COLORS[(first + index) % len(_COLORS)]
        shown = _thin(sorted(points))
        drawn += len(shown)
        coordinates = " ".join(f"{px(x)},{py(y)}" for x, y in shown)
        parts.append(f"<polyline data-series='{escape(label)}' points='{coordinates}' fill='none' stroke='{color}'"
                     " stroke-width='2' stroke-linejoin='round'/>")
        for x, y in shown:
            parts.append(f"<circle class='tc-point' cx='{px(x)}' cy='{py(y)}' r='2' fill='{color}'>"
                         f"<title>{escape(label)} at {x:.1f} s: {_number(y)}{unit}</title></circle>")
        parts.append(f"<circle cx='{legend_x + 6}' cy='44' r='6' fill='{color}'/>"
                     f"<text class='tc-legend' x='{legend_x + 16}' y='48'>{escape(label)}</text>")
        legend_x += 28 + 7 * len(label)
    return (f"<figure data-chart='{name}' data-points='{samples}' data-drawn='{drawn}'>"
            f"<svg viewBox='0 0 {_W} {_H}' role='img' aria-label='{escape(title)}'>{''.join(parts)}</svg></figure>")


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


# -- the section ----------------------------------------------------------------------------

def _wrap(body: str) -> str:
    return (f"<section id='{SECTION_ID}'>"
            f"<style>{_STYLE}</style>{body}</section><script>{_SCRIPT % {'id': SECTION_ID}}</script>")


def section(report: Report) -> str:
    """The whole section (with its style and script) for a finished run's report."""
    return _wrap("".join((
        _verdict(report), _tools(report), _conflicts_and_anomalies(report), _distributions(report),
        _steps(report), _sla(report), _audit(report), _server(report), _charts(report),
    )))


def pending_section(why: str) -> str:
    """The section when there is no verdict to show (yet): says why."""
    return _wrap(f"<div class='tc-paper tc-verdict' data-part='verdict' data-verdict='none'>"
                 f"<h2>toolclash verdict: <span class='tc-note' data-verdict-word>none yet</span></h2>"
                 f"<p>{escape(why)}</p></div>")


def insert_section(page: str, html: str) -> str:
    """`page` (Locust's report) with toolclash's section in its body (placed by its script)."""
    at = page.rfind("</body>")
    return page[:at] + html + page[at:] if at >= 0 else page + html


def add_to_html_report(path: str, html: str) -> None:
    """Put `html` (section() or pending_section()) into the report Locust wrote at `path`."""
    target = Path(path)
    target.write_text(insert_section(target.read_text(encoding="utf-8"), html), encoding="utf-8")


def install_on_web_ui(web_ui: Any, section_now: Any) -> None:
    """The web UI's report (Locust's /stats/report, its 'Download Report') carries the section
    too: `section_now()` gives the section for the test the page is about."""
    from flask import request

    @web_ui.app.after_request
    def _add_toolclash_section(response: Any) -> Any:
        if (request.endpoint == "locust.stats_report" and response.status_code == 200
                and response.mimetype == "text/html" and not response.direct_passthrough):
            response.set_data(insert_section(response.get_data(as_text=True), section_now()))
        return response
