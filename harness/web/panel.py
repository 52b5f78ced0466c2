"""toolclash in Locust's web UI: a `toolclash` tab with the run's figures, charts over time, and
after each stop the verdict, the SLA table and the audit checks.

Locust's UI takes extra tabs from a locustfile (`extended_tabs`), but draws nothing in them but
a table of text (`extended_tables`), and it stops asking for stats when a test stops: too soon
for the final figures and the verdict, which come from the audit after the stop. So the tab holds
toolclash's own panel, the page served here at `/toolclash` (it asks `/toolclash/data` every
2 s, before, during and after a ramp), which a small script added to Locust's page
(`assets/tab.js`) shows inside the tab. The page works alone too. Nothing comes from a CDN.

Where the figures come from: the process that decides the verdict (the local runner, or the
master, whose sum of the workers' shipments is exact up to their last stats report), the server
sampler's rows (lock waits, blocking chains, the server's deadlocks), and each load process's
running totals sampled every second (`Metrics.load_samples`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flask import Blueprint, Response, request, send_from_directory
from locust.env import Environment
from locust.runners import STATE_INIT, STATE_RUNNING, STATE_SPAWNING

from harness.config.settings import Settings
from harness.report_shape import Report, Workflows
from harness.watch.metrics import CONFLICT_COUNTERS, Metrics
from harness.watch.workflow_stats import ran_workflows

if TYPE_CHECKING:
    from locust.web import WebUI

__all__ = ["Judging", "Panel", "CONFLICT_LABELS", "load_series", "server_series"]

TAB_KEY = "toolclash"
_ASSETS = Path(__file__).with_name("assets")
# The conflict columns of the figures table, in the report's names, with the words a user reads.
CONFLICT_LABELS = {
    "deadlocks": "deadlocks",
    "serialization_failures": "serialization failures",
    "version_conflicts": "version conflicts",
    "lock_timeouts": "lock timeouts",
    "pool_timeouts": "pool timeouts",
    "queue_rejections": "queue rejections",
    "redis_watch_conflicts": "WATCH conflicts",
    "connection_errors": "connection errors",
}
assert set(CONFLICT_LABELS) == set(CONFLICT_COUNTERS) - {"indeterminate"}
_CALL_COLUMNS = {"calls": "calls", "succeeded": "succeeded", "failed": "failed", "indeterminate": "indeterminate",
                 "cut_off": "cut off", "retries": "retries"}
# The charts keep at most this many points per series: a long ramp is shown in wider steps.
_MAX_POINTS = 600
_REPORT_SECTIONS = ("run", "verdict", "exit_code", "transport", "tools", "conflicts", "errors", "anomalies", "sla",
                    "audit", "evidence", "server_counters", "latency_ms", "turns", "workflows", "stages", "baseline",
                    "not_audited_by_identity", "history_check")


class Judging(Protocol):
    """What the tab shows of the process that judges the run (the local runner, or the master)."""

    @property
    def settings(self) -> Settings:
        """The current (or last) test's."""

    @property
    def report(self) -> Report | None:
        """The last audited test's report."""

    @property
    def audit_error(self) -> str | None:
        """Why the current test could not be audited."""

    @property
    def exit_code(self) -> int | None:
        """The process's so far: the worst of its ramps."""

    def live_metrics(self) -> Metrics:
        """What the agents recorded in the current (or last) test so far."""

    def server_samples(self) -> list[dict[str, Any]]:
        """The server sampler's rows of the current (or last) test."""


class Panel:
    """The tab's content, for one Locust process (the local runner or the master). `settings`:
    the process's at start, whose tools the figures table lists first."""

    def __init__(self, judging: Judging, environment: Environment, settings: Settings, web_ui: WebUI) -> None:
        self._judging = judging
        self._runner = environment.runner
        self._tools = list(dict.fromkeys(weighted.tool.name for scenario in settings.scenarios
                                         for weighted in scenario.tools(settings.params)))
        self._ramps = 0
        # The last report when the current ramp started: an earlier ramp's, never shown as this one's.
        self._earlier_report: Report | None = None
        environment.events.test_start.add_listener(self._on_test_start)
        self._install(web_ui, environment.parsed_options.web_base_path or "")

    def _on_test_start(self, **_: Any) -> None:
        self._ramps += 1
        self._earlier_report = self._judging.report

    def _install(self, web_ui: WebUI, base_path: str) -> None:
        web_ui.template_args["extended_tabs"] = [{"title": "toolclash", "key": TAB_KEY}]
        web_ui.template_args["extended_csv_files"] = [
            {"href": "./toolclash/report.json", "title": "Download the toolclash report of the last ramp (JSON)"}]
        blueprint = Blueprint("toolclash", __name__, url_prefix=base_path or None)
        guarded = web_ui.auth_required_if_enabled
        blueprint.add_url_rule("/toolclash", "page", guarded(lambda: send_from_directory(_ASSETS, "panel.html")))
        blueprint.add_url_rule("/toolclash/assets/<path:name>", "assets",
                               guarded(lambda name: send_from_directory(_ASSETS, name, max_age=0)))
        blueprint.add_url_rule("/toolclash/data", "data", guarded(lambda: _json(self.data())))
        blueprint.add_url_rule("/toolclash/status", "status", guarded(lambda: _json(self.status())))
        blueprint.add_url_rule("/toolclash/report.json", "report", guarded(self._report_json))
        web_ui.app.register_blueprint(blueprint)
        web_ui.app.after_request(_add_tab_script)

    def _report_json(self) -> Response:
        if self._judging.report is None:
            return Response("no ramp has been audited yet\n", status=404, mimetype="text/plain")
        response = _json(self._judging.report)
        name = f"toolclash-{self._judging.report['run']['run_id']}.json"
        response.headers["Content-Disposition"] = f"attachment; filename={name}"
        return response

    # -- what the page shows ----------------------------------------------------------------

    def _report(self) -> Report | None:
        """The report of the current ramp, once it is audited."""
        return self._judging.report if self._judging.report is not self._earlier_report else None

    def status(self) -> dict[str, Any]:
        """Where the current ramp is: ready (none yet), running, auditing, done or audit_error."""
        if self._report() is not None:
            status = "done"
        elif self._ramps and self._judging.audit_error:
            status = "audit_error"
        elif self._runner.state in (STATE_SPAWNING, STATE_RUNNING):
            status = "running"
        elif self._ramps and self._runner.state != STATE_INIT:
            status = "auditing"
        else:
            status = "ready"
        return {"ramp": self._ramps, "status": status}

    def data(self) -> dict[str, Any]:
        judging, runner = self._judging, self._runner
        report = self._report()
        status = self.status()["status"]
        metrics = judging.live_metrics() if self._ramps else Metrics()
        samples = judging.server_samples() if self._ramps else []
        return {
            "ramp": self._ramps,
            "status": status,
            "state": runner.state,
            "agents": runner.user_count,
            "audit_error": judging.audit_error if status == "audit_error" else None,
            "exit_code": judging.exit_code,  # the process's so far: the worst of its ramps
            "figures": self._figures(metrics, samples[-1] if samples else None, report),
            # The agents' turns (docs/agents.md, Turns): live from what the agents recorded so far,
            # the report's once audited.
            "turns": report["turns"] if report else metrics.turns.section(),
            # The workflows' writes (docs/agents.md, Workflows across turns), only in a run with
            # workflows (None: no table): as the turns, live, then the report's.
            "workflows": self._workflows(metrics, report),
            "series": {"load": load_series(metrics.load_samples), "server": server_series(samples)},
            "verdict": {key: report[key] for key in _REPORT_SECTIONS if key in report} if report else None,
        }

    def _workflows(self, metrics: Metrics, report: Report | None) -> Workflows | None:
        if report is not None:
            return report["workflows"] if ran_workflows(report) else None
        if metrics.workflows.tools or any(scenario.workflows for scenario in self._judging.settings.scenarios):
            return metrics.workflows.section()
        return None

    def _figures(self, metrics: Metrics, sample: dict[str, Any] | None,
                 report: Report | None) -> dict[str, Any]:
        rows = []
        for name in [*self._tools, *sorted(set(metrics.tools) - set(self._tools))]:
            stats = metrics.tools.get(name)
            row = {"tool": name, **{column: getattr(stats, column, 0) for column in _CALL_COLUMNS}}
            row.update({kind: stats.failures.get(kind, 0) if stats else 0 for kind in CONFLICT_LABELS})
            rows.append(row)
        total = {"tool": "all tools", **{column: sum(row[column] for row in rows) for column in _CALL_COLUMNS}}
        total.update({kind: metrics.conflicts.get(kind, 0) for kind in CONFLICT_LABELS})
        return {
            "columns": [*_CALL_COLUMNS, *CONFLICT_LABELS],
            "conflicts": list(CONFLICT_LABELS),
            "labels": {**_CALL_COLUMNS, **CONFLICT_LABELS},
            "rows": [*rows, total],
            "cards": [{"key": "pool_wait_p95_ms", "label": "pool wait p95 (ms)",
                       "value": metrics.distributions["pool_wait"].percentile_ms(95)},
                      *_server_cards(sample, report)],
        }


def _server_cards(sample: dict[str, Any] | None, report: Report | None) -> list[dict[str, Any]]:
    """The server's figures: during a ramp, its latest sample; once audited, the run's peaks and
    the deadlocks PostgreSQL counted over the whole run (pg_stat_database, as the report has them)."""
    if report is not None:
        server = report["server_counters"]
        figures = [("lock_waiters", "peak lock waiters", server.get("peak_lock_waiters")),
                   ("longest_lock_wait_ms", "longest lock wait (ms)", server.get("longest_lock_wait_ms")),
                   ("longest_blocking_chain", "longest blocking chain", server.get("longest_blocking_chain")),
                   ("deadlocks", "deadlocks (the server's, over the run)", server.get("deadlocks"))]
    else:
        sample = sample or {}
        figures = [("lock_waiters", "lock waiters now", sample.get("pg_lock_waiters")),
                   ("longest_lock_wait_ms", "longest lock wait now (ms)", sample.get("pg_longest_lock_wait_ms")),
                   ("longest_blocking_chain", "longest blocking chain now", sample.get("pg_longest_blocking_chain")),
                   ("deadlocks", "deadlocks so far (the server's)", sample.get("pg_deadlocks"))]
    return [{"key": key, "label": label, "value": value} for key, label, value in figures]


def load_series(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The load processes' running totals, added up second by second (or in wider steps), as
    rates: calls/s, conflicts per attempt, and agents and pool requests waiting at that moment.
    Only up to the time every process has reported: a worker's latest shipment may lag."""
    by_process: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_process[sample["process"]].append(sample)
    if not by_process:
        return []
    for rows in by_process.values():
        rows.sort(key=lambda row: row["t"])
    horizon = min(rows[-1]["t"] for rows in by_process.values())
    step = max(1, math.ceil(horizon / _MAX_POINTS))
    points, before = [], None
    positions = dict.fromkeys(by_process, -1)
    for k in range(int(horizon // step) + 1):
        at = k * step
        now: dict[str, Any] = {"calls": 0, "attempts": 0, "conflicts": 0, "agents": 0, "pool_waiting": 0}
        for process, rows in by_process.items():
            while positions[process] + 1 < len(rows) and rows[positions[process] + 1]["t"] <= at + 0.5:
                positions[process] += 1
            if positions[process] >= 0:
                row = rows[positions[process]]
                for key in now:
                    # Over MCP no pool is sampled (None): the chart shows none rather than 0 waiting.
                    now[key] = None if now[key] is None or row.get(key, 0) is None else now[key] + row.get(key, 0)
        if before is not None:
            attempts = now["attempts"] - before["attempts"]
            points.append({
                "t": at,
                "agents": now["agents"],
                "calls_per_s": round((now["calls"] - before["calls"]) / step, 2),
                "conflict_rate": round((now["conflicts"] - before["conflicts"]) / attempts, 4) if attempts else None,
                "pool_waiting": now["pool_waiting"],
            })
        before = now
    return points


def server_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server sampler's rows: lock waiters, the longest blocking chain, deadlocks per second
    (the server's own count), with the agents running at each sample."""
    points = []
    stride = max(1, math.ceil(len(rows) / _MAX_POINTS))
    previous = None
    for row in rows[::stride]:
        deadlocks_per_s = None
        if previous is not None and row["t_s"] > previous["t_s"]:
            elapsed = row["t_s"] - previous["t_s"]
            deadlocks_per_s = round((row["pg_deadlocks"] - previous["pg_deadlocks"]) / elapsed, 3)
        points.append({
            "t": row["t_s"],
            "agents": row["agents"],
            "lock_waiters": row["pg_lock_waiters"],
            "blocking_chain": row["pg_longest_blocking_chain"],
            "deadlocks_per_s": deadlocks_per_s,
        })
        previous = row
    return points


def _json(data: Any) -> Response:
    """As the JSON report is written (--report-json): what JSON has no type for, as text."""
    return Response(json.dumps(data, default=str), mimetype="application/json")


_TAB_SCRIPT = b'<script src="./toolclash/assets/tab.js"></script></body>'


def _add_tab_script(response: Response) -> Response:
    """Locust's page gets the script that puts toolclash's panel in the toolclash tab."""
    if request.endpoint == "locust.index" and response.status_code == 200 and response.mimetype == "text/html":
        response.set_data(response.get_data().replace(b"</body>", _TAB_SCRIPT, 1))
    return response
