"""Whole `locust` runs started by a run of toolclash, each with its own report: the isolation
matrix's levels (harness.run.matrix) and a capacity search's probes (harness.run.capacity).

A child run takes the parent's command line but for the options its parent sets itself, and the
servers through its environment, not its command line, which every user of the machine can read
(`ps`): a DSN or URL may hold a password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.report_shape import Report

__all__ = ["ChildRun", "child_arguments", "run_child"]

_BY_ENVIRONMENT = {"--pg-dsn": "TOOLCLASH_PG_DSN", "--redis-url": "TOOLCLASH_REDIS_URL"}


def child_arguments(argv: list[str], own: dict[str, bool]) -> tuple[list[str], dict[str, str]]:
    """The command line of each child run, and the variables to set in its environment. `own`:
    the options the parent sets itself in each child, dropped from the user's (True: it takes a
    value, given in the next word or after "="; a one-letter option's may follow it: -u10)."""
    kept: list[str] = []
    variables: dict[str, str] = {}
    words = iter(argv)
    for arg in words:
        name, has_value, value = arg.partition("=")
        if name in _BY_ENVIRONMENT:
            variables[_BY_ENVIRONMENT[name]] = value if has_value else next(words, "")
        elif name in own:
            if own[name] and not has_value:
                next(words, None)
        elif not (len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[:2] in own):  # -u10
            kept.append(arg)
    return kept, variables


class ChildRun:
    """One child run's outcome: its report, or why it gave none (one line)."""

    def __init__(self, report: Report | None, reason: str) -> None:
        self.report = report
        self.reason = reason


def run_child(arguments: list[str], variables: dict[str, str], unset: frozenset[str] = frozenset()) -> ChildRun:
    """Run `locust` with `arguments` (the parent's `--report-json` added) and `variables` added to
    the parent's environment, less the variables named in `unset`; its report read back. Its
    console is not shown (the parent prints a line of each child run): only its stderr is kept,
    for the line that says why it gave no report."""
    environment = {**{name: value for name, value in os.environ.items() if name not in unset}, **variables}
    with tempfile.TemporaryDirectory(prefix="toolclash-child-") as scratch:
        report_path = Path(scratch) / "report.json"
        with subprocess.Popen([sys.executable, "-m", "locust", *arguments, "--report-json", str(report_path)],
                              env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) as process:
            try:
                _, stderr = process.communicate()
            except KeyboardInterrupt:
                # A terminal's Ctrl-C reached the child too (its process group's): it stops and
                # audits its run as any run does. Wait for that; a second Ctrl-C ends it at once.
                try:
                    process.communicate()
                finally:
                    process.kill()
                raise
        if not report_path.exists():
            lines = [line.strip() for line in stderr.splitlines() if line.strip()]
            last = f": {lines[-1]}" if lines else ""
            reason = next((line for line in reversed(lines) if "toolclash: error" in line),
                          f"exit code {process.returncode}{last}")
            return ChildRun(None, reason)
        return ChildRun(json.loads(report_path.read_text(encoding="utf-8")), "")
