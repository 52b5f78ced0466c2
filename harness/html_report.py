"""toolclash's part of Locust's HTML report (--html): the verdict, the conflicts and anomalies,
the server's figures, the SLA table and the audit, added to the same file, so the one page a
user opens tells the whole story. Locust writes its report before it quits; this section goes
in right before the page's end."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

__all__ = ["add_to_html_report", "SECTION_ID"]

SECTION_ID = "toolclash-report"

_STYLE = (
    "font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:1em 2em;"
    "background:#fff;color:#111;border-top:4px solid {color}"
)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 10px'>{escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(report: dict[str, Any]) -> str:
    passed = report["verdict"] == "pass"
    server = report["server"]
    parts = [
        f"<section id='{SECTION_ID}' style='{_STYLE.format(color='#2a2' if passed else '#c22')}'>",
        f"<h2>toolclash verdict: {escape(report['verdict'].upper())} (exit code {report['exit_code']})</h2>",
        f"<p>run {escape(report['run']['run_id'])}: {escape(', '.join(report['run']['scenarios']))} at "
        f"{escape(report['run']['isolation'])}, {report['run']['agents']} agents, {report['run']['duration_s']:.1f} s,"
        f" seed {report['run']['seed']}</p>",
        "<h3>Conflicts</h3>", _table(["counter", "count"], [[k, v] for k, v in report["conflicts"].items()]),
        "<h3>Anomalies</h3>", _table(["anomaly", "count"], [[k, v] for k, v in report["anomalies"].items()]),
        "<h3>Server (over the run)</h3>",
        _table(["figure", "value"], [[k, v] for k, v in server.items() if k != "deadlock_timeout"]
               + [["deadlock_timeout", server["deadlock_timeout"]["note"]]]),
        "<h3>SLA</h3>",
        _table(["rule", "observed", "needs", "result"],
               [[r["name"], r["observed"], f"{r['op']} {r['threshold']:g}", "ok" if r["ok"] else "FAIL"]
                for r in report["sla"]]),
        "<h3>Audit</h3>",
        _table(["check", "expected", "observed", "result", "detail"],
               [[c["name"], c["expected"], c["observed"], "ok" if c["ok"] else "FAIL", c["detail"]]
                for c in report["audit"]["checks"]]),
        "</section>",
    ]
    return "\n".join(parts)


def add_to_html_report(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    page = target.read_text(encoding="utf-8")
    section = _section(report)
    at = page.rfind("</body>")
    target.write_text(page[:at] + section + page[at:] if at >= 0 else page + section, encoding="utf-8")
