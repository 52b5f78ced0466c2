"""--history: the run as JSON lines, one per tool call's invocation (with its arguments) and one
per its completion (with its value), typed as in Jepsen's histories.

Each process writes a file of its own, so that no line crosses the network or waits for
another process: the local runner or the master writes PATH, worker N writes PATH.worker-N on
its own host. Every line names its process; `time` is that process's time.monotonic_ns(), which
only orders the lines of one process. At each test start every process writes a `run` line
(the run's id and seed, and its monotonic and wall-clock times read together), by which `join`
puts the lines of all the files on one timeline:

    python -m harness.output.history PATH > joined.jsonl

Lines go through a buffer, one JSON encoding each, no fsync: flushed when the load stops (and
on a worker with each stats report to the master). A process killed hard loses what its buffer
held.
"""

from __future__ import annotations

import glob
import json
import logging
import sys
import time
from typing import IO, Any

from transport.call_record import CallRecord, Outcome

__all__ = ["COMPLETION_TYPES", "History", "join", "worker_path"]

log = logging.getLogger(__name__)

COMPLETION_TYPES = {
    Outcome.SUCCEEDED: "ok",
    Outcome.FAILED: "fail",
    Outcome.INTERRUPTED: "fail",  # the agent stopped before COMMIT was sent: rolled back
    Outcome.INDETERMINATE: "info",  # COMMIT was in flight when the connection or the agent was lost
}

_BUFFER_BYTES = 64 * 1024
# One encoder for every line: json.dumps builds a new one per call when given separators.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _lane(record: CallRecord) -> dict[str, Any]:
    """The agent's turn that made the call, from 1, and its lane: the agent and the call's slot
    in its turns, whose calls follow one another (a sequential process for a history checker)."""
    return {"turn": record.turn, "lane": record.lane}


def worker_path(path: str, index: int) -> str:
    """Where worker `index` writes the history given as `path`."""
    return f"{path}.worker-{index}"


class History:
    """One process's history file, created (or emptied) at once: OSError when it cannot be."""

    def __init__(self, path: str, process: str) -> None:
        self.path = path
        self.process = process  # "local", "master" or "worker-<index>"
        self._file: IO[str] | None = open(path, "w", encoding="utf-8", buffering=_BUFFER_BYTES)

    def run_started(self, run_id: str, seed: int) -> None:
        self._write({"type": "run", "time": time.monotonic_ns(), "wall_time_ns": time.time_ns(),
                     "process": self.process, "run_id": run_id, "seed": seed})

    def invoked(self, record: CallRecord) -> None:
        """The adapter's `call_started` listener."""
        self._write({"type": "invoke", "time": record.started_ns, "process": self.process, "agent": record.agent_id,
                     **_lane(record), "op": str(record.op_id), "tool": record.tool, "seed": record.seed,
                     "arguments": record.arguments})

    def completed(self, record: CallRecord) -> None:
        """The adapter's `call_finished` listener."""
        self._write({"type": COMPLETION_TYPES[record.outcome], "time": time.monotonic_ns(), "process": self.process,
                     "agent": record.agent_id, **_lane(record), "op": str(record.op_id), "tool": record.tool,
                     "outcome": record.counted_as, "attempts": record.attempts,
                     "failures": [failure.value for failure in record.failures],
                     "duration_ns": round(record.duration_s * 1e9), "value": record.value})

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(_encode(line) + "\n")
        except OSError as exc:
            self._give_up(exc)

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._give_up(exc)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _give_up(self, exc: OSError) -> None:
        """A full disk must not cost the run, nor log an error per call: one error, then no more lines."""
        log.error("toolclash: --history %s: %s; the history stops here", self.path, exc)
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass  # its buffer cannot be written either: that is what was just reported


def join(path: str) -> list[dict[str, Any]]:
    """The lines of PATH and of every PATH.worker-<index>, ordered by `wall_time_ns`, which each
    line gets: its process's run line's wall-clock time plus the monotonic time since that line.
    A process's own lines keep their order; across hosts the order is as good as their clocks.
    Only the runs that PATH names are kept: a worker file left by an earlier run with more
    workers is not this run's. A last line cut short (its process was killed) is left out."""
    runs: set[str] = set()
    lines: list[dict[str, Any]] = []
    for position, name in enumerate([path, *sorted(glob.glob(glob.escape(path) + ".worker-*"))]):
        run: dict[str, Any] | None = None
        with open(name, encoding="utf-8") as file:
            for text in file:
                if not text.endswith("\n"):
                    break
                line = json.loads(text)
                if line["type"] == "run":
                    run = line
                    if position == 0:
                        runs.add(run["run_id"])
                if run is not None and run["run_id"] in runs:
                    line["wall_time_ns"] = run["wall_time_ns"] + line["time"] - run["time"]
                    lines.append(line)
    lines.sort(key=lambda line: line["wall_time_ns"])
    return lines


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.output.history PATH  (the --history PATH of the run)", file=sys.stderr)
        return 2
    for line in join(argv[0]):
        sys.stdout.write(_encode(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
