"""The web UI's 'Download Report' (Locust's /stats/report) with toolclash's section in it, as the
`--html` file has it (harness.output.html)."""

from __future__ import annotations

from typing import Any

from flask import request

from harness.output.html.locust_report import insert_section

__all__ = ["install_on_web_ui"]


def install_on_web_ui(web_ui: Any, section_now: Any) -> None:
    """The web UI's report (Locust's /stats/report, its 'Download Report') carries the section
    too: `section_now()` gives the section for the test the page is about."""

    @web_ui.app.after_request
    def _add_toolclash_section(response: Any) -> Any:
        if (request.endpoint == "locust.stats_report" and response.status_code == 200
                and response.mimetype == "text/html" and not response.direct_passthrough):
            response.set_data(insert_section(response.get_data(as_text=True), section_now()))
        return response
