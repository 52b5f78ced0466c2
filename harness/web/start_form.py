"""The web UI's start form: toolclash's per-run options, checked before Locust applies them.

Locust's /swarm handler writes every form field it knows into `environment.parsed_options` and
starts the test in the background; a value it cannot convert is an HTTP 500, and one that
converts but makes no sense would only be found at the test's start, after the UI said it
started. So a request hook of the web UI's Flask app checks the form first, the same way the
test's start will (harness.config.run_settings), and answers a bad value in the shape of Locust's own
refusals ({"success": false, "message": ...}), which the UI shows under the form: nothing is
applied, nothing starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Response, jsonify, request
from flask_login import current_user
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from harness.config.declared import FIXED_OPTIONS, RUN_OPTIONS
from harness.config.option import BadOption
from harness.config.settings import Settings

__all__ = ["check_start_form", "form_problem", "is_a_start", "refused_start"]

SWARM_ENDPOINT = "locust.swarm"  # Locust's blueprint "locust", view swarm()


def check_start_form(environment: Environment, web_ui: Any, settings_for: Callable[[Any], Settings]) -> None:
    """Check every start (and edit) of a test from the web UI before Locust sees the form.
    `settings_for(options)`: the settings a test started with those options would run with."""
    web_ui.app.before_request(partial(_check, environment, web_ui, settings_for))


def is_a_start() -> bool:
    """Whether the request being served is the start form's (or its edit of a running test)."""
    return request.endpoint == SWARM_ENDPOINT and request.method == "POST"


def refused_start(problem: str, **answer: Any) -> Response:
    """A start refused in one line: printed, as the command line's refusal is, and answered to the
    form with `answer`'s other fields."""
    line = f"toolclash: error: {problem}"
    print(line, file=sys.stderr, flush=True)
    return jsonify({"success": False, "message": line, **answer})


def _check(environment: Environment, web_ui: Any, settings_for: Callable[[Any], Settings]) -> Response | None:
    if not is_a_start():
        return None
    if web_ui.web_login and not current_user.is_authenticated:
        return None  # Locust's view asks for the login first
    running = environment.runner is not None and environment.runner.state in (STATE_RUNNING, STATE_SPAWNING)
    problem = form_problem(request.form, environment.parsed_options, settings_for, running=running)
    if problem is None:
        return None
    return refused_start(problem, host=environment.host)


def form_problem(form: Any, options: Any, settings_for: Callable[[Any], Settings], *, running: bool) -> str | None:
    """What is wrong with a /swarm form's toolclash fields (one line, as on the command line),
    or None. `options`: parsed_options as they are now; `running`: a test is running (the form
    edits it)."""
    fixed = [o.flag for o in FIXED_OPTIONS if o.dest in form]
    if fixed:
        return (f"{', '.join(fixed)}: fixed when the process starts (servers reached, schema claimed):"
                " give it on the command line")
    asked = {o.dest: form[o.dest] for o in RUN_OPTIONS if o.dest in form}
    candidate = argparse.Namespace(**{**vars(options), **asked})
    try:
        if running:
            changed = [o.flag for o in RUN_OPTIONS
                       if o.dest in asked and o.typed(asked[o.dest]) != o.typed(getattr(options, o.dest))]
            if changed:
                return (f"{', '.join(changed)}: cannot change during a test; stop it, then start a new one"
                        " with the new value")
        settings_for(candidate)
    except BadOption as exc:
        return str(exc)
    return None
