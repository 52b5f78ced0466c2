"""toolclash's part of Locust's HTML report: the `--html` file and the web UI's 'Download Report'
(Locust's /stats/report) both carry it.

The section tells the run's story in the order a reader asks: the verdict and why, the tool
calls, the conflicts and anomalies, the agents' turns, the workflows' writes from stale reads (in
a run with workflows), the distributions (deadlock detection and resolution, pool wait, queue
wait, cross-service window), the per-stage figures of a load shape, the SLAs, the audit, the
list_append history's anomalies by Elle's names (in a run with it), the servers' figures and the
time series the harness sampled, drawn as inline SVG.

Locust's report is a React page (MUI) rendered in the browser into #root: a few lines of script
move the section, rendered here on the server, right after Locust's summary (the "During / Target
Host / Script" lines) once the page has rendered, and give it the page's theme (light or dark, as
Locust chose it). Without script the section stays whole at the page's end. Nothing is fetched:
the page works offline, its style (section.css) and script (section.js) are in the section.

This module puts the section together; each block comes from its own module (verdict_block,
call_tables, server_tables, history_block, time_series, drawn by chart). The names with a leading underscore are
the package's own: its modules share them, nothing outside it uses them. locust_report puts the
section into Locust's page.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from harness.output.html.call_tables import (
    _conflicts_and_anomalies,
    _distributions,
    _sla,
    _stages,
    _tools,
    _turns,
    _workflows,
)
from harness.output.html.history_block import _history
from harness.output.html.server_tables import _audit, _server
from harness.output.html.time_series import _charts
from harness.output.html.verdict_block import _verdict
from harness.report_shape import Report

__all__ = ["SECTION_ID", "pending_section", "section"]

SECTION_ID = "toolclash-report"
_HERE = Path(__file__).parent
# Locust's palette (MUI's, and its charts' ECharts theme), light and dark: the section follows
# whichever the page shows.
_STYLE = (_HERE / "section.css").read_text(encoding="utf-8")
# Runs where the section is in the page: moves it after Locust's summary once React has drawn
# the page, and gives it the page's theme (the body's background; else Locust's own choice:
# window.theme, localStorage.theme, the system's preference).
_SCRIPT = (_HERE / "section.js").read_text(encoding="utf-8")


def _wrap(body: str) -> str:
    return (f"<section id='{SECTION_ID}'>"
            f"<style>\n{_STYLE}</style>{body}</section><script>\n{_SCRIPT}</script>")


def section(report: Report) -> str:
    """The whole section (with its style and script) for a finished run's report."""
    return _wrap("".join((
        _verdict(report), _tools(report), _conflicts_and_anomalies(report), _turns(report), _workflows(report),
        _distributions(report), _stages(report), _sla(report), _audit(report), _history(report), _server(report),
        _charts(report),
    )))


def pending_section(why: str) -> str:
    """The section when there is no verdict to show (yet): says why."""
    return _wrap(f"<div class='tc-paper tc-verdict' data-part='verdict' data-verdict='none'>"
                 f"<h2>toolclash verdict: <span class='tc-note' data-verdict-word>none yet</span></h2>"
                 f"<p>{escape(why)}</p></div>")
