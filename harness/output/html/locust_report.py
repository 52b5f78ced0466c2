"""toolclash's section put into Locust's HTML report: the page Locust wrote for `--html`, and (the
web UI's Download Report, harness.web.report_download) the page Locust serves."""

from __future__ import annotations

from pathlib import Path

from harness.output.html.section import pending_section, section
from harness.report_shape import Report

__all__ = ["add_to_html_report", "insert_section", "section_for_test"]


def section_for_test(report: Report | None, run_id: str, audit_error: str | None) -> str:
    """The section for the test Locust's figures are about (`run_id`, the last one started; ""
    before any): its report's, or why it has none yet."""
    if report is not None and report["run"]["run_id"] == run_id:
        return section(report)
    if not run_id:
        return pending_section("No test has run yet: toolclash audits a test and decides its verdict when it"
                               " stops.")
    if audit_error is not None:
        return pending_section(f"Run {run_id} could not be audited ({audit_error}): it has no verdict.")
    return pending_section(f"Run {run_id} has not been audited yet: toolclash audits a test and decides its"
                           " verdict when it stops. Download the report again then.")


def insert_section(page: str, html: str) -> str:
    """`page` (Locust's report) with toolclash's section in its body (placed by its script)."""
    at = page.rfind("</body>")
    return page[:at] + html + page[at:] if at >= 0 else page + html


def add_to_html_report(path: str, html: str) -> None:
    """Put `html` (section() or pending_section()) into the report Locust wrote at `path`."""
    target = Path(path)
    target.write_text(insert_section(target.read_text(encoding="utf-8"), html), encoding="utf-8")
