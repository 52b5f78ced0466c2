"""What one tool call did, as the adapter reports it to the event hooks."""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from db.errors import Failure
from db.tool import Tool

__all__ = ["CallRecord", "Outcome", "draw_arguments", "lane_of"]

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The connection was lost (or the agent stopped) while COMMIT was in flight: the server may
    # or may not have committed. The ledger audit allows for these.
    INDETERMINATE = "indeterminate"
    # The agent was stopped before COMMIT was sent: the transaction was rolled back.
    INTERRUPTED = "interrupted"


@dataclass
class CallRecord:
    tool: str
    backend: str
    op_id: uuid.UUID
    outcome: Outcome = Outcome.FAILED
    attempts: int = 0
    failures: list[Failure] = field(default_factory=list)  # one per failed attempt, in order
    pool_waits_s: list[float] = field(default_factory=list)  # one per attempt that got a connection
    duration_s: float = 0.0  # the whole call: pool waits, attempts and backoff sleeps
    deadlock_detections_s: list[float] = field(default_factory=list)
    deadlock_resolution_s: float | None = None  # first deadlock error to the call's success
    observations: list[tuple[str, float]] = field(default_factory=list)  # the tool's own timings
    # Each attempt that reached its server, after OpenTelemetry's conventions: (the operation's
    # system: "postgresql", "redis" or "mcp"; its seconds; the SQLSTATE the server answered, or "";
    # the failure's kind, or "" when it succeeded). A wait for the pool is not an operation.
    operations: list[tuple[str, float, str, str]] = field(default_factory=list)
    exception: BaseException | None = None
    # Who made the call, and the seed its arguments are drawn from (db.tool).
    agent_id: str = ""
    seed: int = 0
    # Drawn once before the first attempt and given to every attempt (JSON-able, by name); None
    # for a tool without an arguments step, which draws from `tx.rng` (seeded `seed`) itself.
    arguments: dict[str, Any] | None = None
    started_ns: int = 0  # time.monotonic_ns() when the call started, before its first attempt
    # The agent's turn that made the call, from 1, and the call's slot in it, from 0: each slot of
    # an agent (its lane) makes its calls one after the other. 0 and 0 for a call no turn made.
    turn: int = 0
    slot: int = 0
    # Whose calls follow one another (the adapter's: the agent and its slot, or what the caller
    # named): what a tool keys its guard of a resent call by (db.tool.Transaction.lane).
    lane: str = ""
    # What the tool handed its agent (its function's return value, JSON-able): set by each attempt
    # that ran the tool to its end, so an indeterminate call has the value it would have. An
    # attempt whose tool raised after saying what it set out to do (db.tool.Transaction.attempted)
    # sets that instead: a call that failed has the value of its last attempt that did either (over
    # MCP, a failed result's `attempted`), and a tool that never says keeps None until one returns.
    value: Any = None
    # Over a tool server (transport.mcp), `attempts` and `failures` are the client's: the
    # tools/call requests it sent for the call, and why each failed. What the server said of its
    # own work is kept apart: its attempts, summed over the replies that said (0: none said), and
    # the failures it said it absorbed. `reissues`: requests sent again with the same op id because
    # a reply was lost or the session had expired (counted in `attempts` too); `is_error_replies`:
    # the replies that were tool results with `isError: true`.
    server_attempts: int = 0
    server_failures: list[Failure] = field(default_factory=list)
    reissues: int = 0
    is_error_replies: int = 0
    # Indeterminate because the run itself stopped the agent while the call was being applied (its
    # COMMIT, its Redis commands or its request out), not because the platform lost it: the audits
    # allow it applied or not, as any indeterminate call, but it says nothing of the platform's
    # service, so no success rate counts it (harness.config.sla).
    cut_off: bool = False

    @property
    def counted_as(self) -> str:
        """The outcome by the report's name for it: the outcome's, but `cut_off` for a call the
        run's own stop left indeterminate."""
        return "cut_off" if self.cut_off else self.outcome.value

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


def lane_of(agent_id: str, slot: int) -> str:
    """An agent's lane: the calls of one slot of its turns, which follow one another."""
    return f"{agent_id}/{slot}"


def draw_arguments(tool: Tool, seed: int, record: CallRecord, *, to_send: bool = False) -> bool:
    """The call's arguments onto its record, drawn once for all its attempts; False when they
    cannot be, and the call failed (an error of the tool, never retried): its arguments step
    raised, or, `to_send` (a call by its name to a server, which holds no seed), it has none."""
    try:
        record.arguments = tool.draw_arguments(seed)
        if to_send and record.arguments is None:
            raise ValueError(f"tool {tool.name} has no arguments step: its arguments cannot be sent over MCP")
        return True
    except Exception as exc:  # the tool's own code: whatever it raises is its error, as in its run
        record.attempts = 1
        record.failures.append(Failure.ERROR)
        record.exception = exc
        log.warning("tool %s failed to draw its arguments: %s: %s", tool.name, type(exc).__name__, exc)
        return False
