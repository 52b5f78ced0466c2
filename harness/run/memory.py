"""What an agent keeps of its reads, for a later turn's write (docs/agents.md: Workflows across
turns). A workflow (tasks.workflows.Workflow) pairs a read tool with a write tool: the value of the
agent's last succeeded read is kept, and when the agent next picks the write, its arguments are
drawn from that value (and the read is spent: the next write reads again first). An agent that
picks a write with nothing read yet, or with a read that leaves nothing to write (an empty queue),
makes the read instead. The write's own choices (how much to deduct) are drawn from the call's
seed, which the agent's random source drew, so the agent's draws never depend on the servers'
data: the same seed makes the same picks, and the same writes of the same reads.
"""

from __future__ import annotations

import random
from typing import Any

from db.tool import Arguments, Tool
from tasks.workflows import Workflow
from transport.call_record import CallRecord, Outcome

__all__ = ["Memory"]


class Memory:
    """One agent's last read per workflow, and the calls planned from it."""

    def __init__(self, workflows: tuple[Workflow, ...], tools: dict[str, Tool], guarded: bool) -> None:
        self._by_write = {workflow.write: workflow for workflow in workflows}
        self._reads = {workflow.read for workflow in workflows}
        self._tools = tools
        self._guarded = guarded
        self._last: dict[str, dict[str, Any]] = {}  # read tool -> its last succeeded call's value

    def plan(self, tool: Tool, seed: int) -> tuple[Tool, Arguments | None]:
        """The call to make for a pick of `tool`: a workflow's write with the arguments its read
        gives, or its read when there is none to write from; any other tool as picked (None: the
        adapter draws its arguments from `seed`)."""
        workflow = self._by_write.get(tool.name)
        if workflow is None:
            return tool, None
        read = self._last.pop(workflow.read, None)
        arguments = None if read is None else workflow.write_arguments(read, random.Random(seed), self._guarded)
        if arguments is None:
            return self._tools[workflow.read], None
        return tool, arguments

    def remember(self, record: CallRecord) -> None:
        """A finished call: a read that succeeded is kept for its workflow's next write."""
        if record.tool in self._reads and record.outcome is Outcome.SUCCEEDED:
            self._last[record.tool] = record.value
