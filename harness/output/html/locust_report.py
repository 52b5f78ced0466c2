"""toolclash's section put into Locust's HTML report: the page Locust wrote for `--html`, and (the
web UI's Download Report, harness.web.report_download) the page Locust serves."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_to_html_report", "insert_section"]


def insert_section(page: str, html: str) -> str:
    """`page` (Locust's report) with toolclash's section in its body (placed by its script)."""
    at = page.rfind("</body>")
    return page[:at] + html + page[at:] if at >= 0 else page + html


def add_to_html_report(path: str, html: str) -> None:
    """Put `html` (section() or pending_section()) into the report Locust wrote at `path`."""
    target = Path(path)
    target.write_text(insert_section(target.read_text(encoding="utf-8"), html), encoding="utf-8")
