"""A --capacity search in the web UI: shown, not started. The web UI's address shows the search
(`/` goes to `/toolclash`: Locust's own page would show a start form and no tab until a test
started, and none starts here) as it goes (the probes so far, the answer they give, the charts),
then its answer; the page reloads itself every few seconds until the answer is in. The start
form's endpoint starts nothing: a search runs its own probes, each a run of its own
(harness.run.capacity), which no test of this web UI could be; a start is refused with one line,
as a bad value of the form is."""

from __future__ import annotations

from typing import Any, Protocol

from flask import Blueprint, Response, redirect, request

from harness.output.html.capacity_page import capacity_page
from harness.report_shape import Capacity
from harness.web.start_form import is_a_start, refused_start

INDEX_ENDPOINT = "locust.index"  # Locust's blueprint "locust", view index(): its page at `/`

__all__ = ["SearchView", "show_capacity_search"]

REFUSED = ("a --capacity search runs its own probes, one run each: this web UI shows the search and starts no"
           " test (run it with --headless to have its exit code)")
_RELOAD_S = 3


class SearchView(Protocol):
    """What the tab reads of the search (harness.run.capacity.CapacitySearch)."""

    @property
    def capacity(self) -> Capacity | None: ...  # the answer, once the search is over

    @property
    def exit_code(self) -> int | None: ...

    def so_far(self) -> Capacity: ...


def show_capacity_search(search: SearchView, web_ui: Any, base_path: str) -> None:
    blueprint = Blueprint("toolclash", __name__, url_prefix=base_path or None)
    blueprint.add_url_rule("/toolclash", "page", web_ui.auth_required_if_enabled(lambda: _page(search)))
    web_ui.app.register_blueprint(blueprint)
    web_ui.app.before_request(_refuse_a_start)
    web_ui.app.before_request(lambda: _to_the_search(base_path))


def _to_the_search(base_path: str) -> Response | None:
    if request.endpoint != INDEX_ENDPOINT:
        return None
    return redirect(f"{base_path}/toolclash")


def _page(search: SearchView) -> Response:
    if search.capacity is not None and search.exit_code is not None:
        return Response(capacity_page(search.capacity, search.exit_code), mimetype="text/html")
    if search.exit_code is not None:  # a probe's run gave no verdict: the console says why
        return Response("<p>toolclash: the capacity search ended without an answer: see the console.</p>",
                        mimetype="text/html")
    page = capacity_page(search.so_far(), None)
    return Response(page.replace("<head>", f"<head><meta http-equiv='refresh' content='{_RELOAD_S}'>", 1),
                    mimetype="text/html")


def _refuse_a_start() -> Response | None:
    return refused_start(REFUSED) if is_a_start() else None
