"""What a restructuring of the code must leave as it is, recorded before it (issue 17: "unchanged
is proven, not assumed"): the toolclash options' help, and the shape of a seeded run's report,
console summary and HTML section. A change meant to alter one of them records them again:

    TOOLCLASH_RECORD_GOLDEN=1 make test PYTEST_ARGS="tests/test_unchanged.py"

and the diff of tests/golden/ shows, in review, what the change did to what users see.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from harness.config.options_help import options_help
from harness.report_shape import Report
from tests.report_conformance import nonconforming
from tests.support import ROOT, read_report

GOLDEN = ROOT / "tests" / "golden"
_RECORD = os.environ.get("TOOLCLASH_RECORD_GOLDEN") == "1"


def _same_as_recorded(name: str, now: str) -> None:
    path = GOLDEN / name
    if _RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(now, encoding="utf-8")
    recorded = path.read_text(encoding="utf-8")
    assert now == recorded, f"{name} changed: record it again if that was meant (see this module's docstring)"


def test_the_options_help_is_unchanged():
    _same_as_recorded("options_help.txt", options_help())


def _report_shape(report: dict[str, Any], schema: str) -> dict[str, Any]:
    """Every part of the report a seeded run fixes, whatever the machine's speed."""
    settings = {**report["settings"], "schema": "<schema>"}
    return {
        "report_version": report["report_version"],
        "keys": sorted(report),
        "run": sorted(report["run"]),
        "run_values": {key: report["run"][key] for key in ("scenarios", "isolation", "agents", "seed")},
        "settings": settings,
        "baseline": report["baseline"],
        "tools": {name: sorted(tool) for name, tool in report["tools"].items()},
        "conflicts": sorted(report["conflicts"]),
        "anomalies": report["anomalies"],
        "checks": [(check["name"], check["ok"]) for check in report["audit"]["checks"]],
        "sla": [(rule["name"], rule["metric"], rule["op"], rule["threshold"]) for rule in report["sla"]],
        "evidence": report["evidence"]["problems"],
        "not_audited_by_identity": report["not_audited_by_identity"],
        "server_counters": sorted(report["server_counters"]),
        "pool": sorted(report["pool"]),
        "verdict": (report["verdict"], report["exit_code"]),
    }


# Summary lines that depend on the machine (its pace, which servers), not on the code: the servers'
# descriptions, the event loop's lag, the distributions observed, the relay's race with an agent.
_VARIABLE_LINES = re.compile(r"^  (PostgreSQL|Redis) |^  \[WARN\] (hub|relay_healed)|^hub: |^[a-z_]+ ms +p50=")
_RELAY = re.compile(r"the relay applied (none|# charges their agents had not \(# at the audit, # during the run\))")


def _summary_shape(stdout: str, schema: str, run_id: str) -> str:
    """The console summary with its figures taken out: the lines, their labels and their order."""
    start = stdout.index("toolclash run ")
    lines = stdout[start:].splitlines()
    shaped = []
    for line in lines:
        if _VARIABLE_LINES.search(line):
            continue
        line = line.replace(schema, "<schema>").replace(run_id, "<run>")
        line = _RELAY.sub("the relay applied <charges>", re.sub(r"\d+(?:[.,]\d+)*", "#", line))
        shaped.append(re.sub(r" {2,}", "  ", line).rstrip())
    return "\n".join(shaped) + "\n"


def _html_shape(page: str) -> str:
    """The toolclash section's parts, headings and tables, in order."""
    section = page[page.index("id='toolclash-report'"):]
    parts = re.findall(r"<h2>(.*?)</h2>|data-part='([a-z_-]+)'|<table[^>]*data-table='([a-z_-]+)'", section)
    return "\n".join(next(part for part in found if part) for found in parts) + "\n"


def test_a_seeded_runs_report_summary_and_html_keep_their_shape(servers, schema, tmp_path, locust):
    report_path, html = tmp_path / "report.json", tmp_path / "report.html"
    done = locust.run("--pg-dsn", servers.pg_dsn, "--redis-url", servers.redis_url, "--schema", schema,
                      "--users", "4", "--spawn-rate", "4", "--run-time", "3s", "--seed", "7",
                      "--sla", str(ROOT / "sla" / "without_latency.toml"),
                      "--report-json", str(report_path), "--html", str(html))
    report = read_report(report_path)
    assert done.returncode == report["exit_code"] == 0, done.stderr[-2000:]
    assert nonconforming(report, Report) == []
    shape = json.dumps(_report_shape(report, schema), indent=1, sort_keys=True) + "\n"
    _same_as_recorded("report_shape.json", shape)
    _same_as_recorded("summary_shape.txt", _summary_shape(done.stdout, schema, report["run"]["run_id"]))
    _same_as_recorded("html_shape.txt", _html_shape(html.read_text(encoding="utf-8")))
