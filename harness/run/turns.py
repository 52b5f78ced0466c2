"""An agent's turn: the batch of tool calls a model emits at once, drawn before the batch starts
and run concurrently, one greenlet each, joined before the agent thinks again (its wait_time).

The calls are drawn from the agent's seeded random source in one go (tools, seeds, and with
--same-key the arguments), so the same seed gives each agent the same turns, whatever the calls'
timing. A turn of one call draws what an agent drew before turns existed, and runs in the
agent's own greenlet, as it did.

--same-key P: each later call of a turn, with chance P, takes a key an earlier call of the turn
took: one of the earlier calls' key values (db.tool.Tool.keys: an account, a counter, a team)
copied into one of its own arguments of that kind, as a model that batches a read and a write
of one account does. A call whose tool has no argument of any kind taken earlier takes none.

What the turn did (harness.watch.turn_stats): its calls, its latency (from the batch's start to
its last call's end: what the agent waits for), whether any call met a conflict, the same-key
pairs drawn, and, over all pairs of its calls, those that shared a key and overlapped in time,
and of those the collisions: pairs at least one of whose calls met a conflict.

With workflows (harness.run.memory), a pick of a workflow's write becomes that write with the
arguments its agent's last read gives (its keys are its read's: --same-key leaves them), or the
read; the turn's succeeded reads are kept once the batch is over, for a later turn's write.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import gevent

from db.tool import Arguments, Tool
from harness.config.turns import CallsPerTurn
from harness.run.memory import Memory
from harness.watch.turn_stats import TurnFigures
from transport.call_record import CallRecord
from transport.in_process import ToolAdapter
from transport.mcp.adapter import McpToolAdapter

__all__ = ["PlannedCall", "Turn", "plan_turn", "run_turn"]


@dataclass(frozen=True)
class PlannedCall:
    tool: Tool
    seed: int
    # Drawn by the agent (with --same-key); None: the adapter draws them from `seed`, as it does
    # for a call outside a turn.
    arguments: Arguments | None = None


@dataclass(frozen=True)
class Turn:
    number: int  # the agent's, from 1
    calls: tuple[PlannedCall, ...]
    same_key_pairs: int  # later calls that took an earlier call's key


def _peek_arguments(tool: Tool, seed: int) -> Arguments | None:
    """The arguments the adapter would draw; None when the tool's step raises (the adapter then
    draws them itself, and the call fails as it would outside a turn)."""
    try:
        return tool.draw_arguments(seed)
    except Exception:  # the tool's own code: its error is the call's to report
        return None


def _keys(tool: Tool, arguments: Arguments | None) -> list[tuple[str, Any]]:
    """The (kind, value) keys a call's arguments take, in the order the tool declares them."""
    return [(kind, arguments[name]) for name, kind in tool.keys if arguments and name in arguments]


def plan_turn(number: int, rng: random.Random, pick: Callable[[random.Random], Tool], calls_per_turn: CallsPerTurn,
              same_key: float, memory: Memory | None = None) -> Turn:
    """The agent's next turn, drawn from `rng`; `pick(rng)` picks a tool (the load's Toolbox);
    `memory`: the agent's reads, with workflows."""
    calls: list[PlannedCall] = []
    taken: list[tuple[str, Any]] = []  # the keys of the turn's earlier calls, in order
    pairs = 0
    for slot in range(calls_per_turn.draw(rng)):
        tool = pick(rng)
        seed = rng.getrandbits(64)
        if memory is not None:
            tool, remembered = memory.plan(tool, seed)
            if remembered is not None:  # a write from its agent's read
                taken.extend(key for key in _keys(tool, remembered) if key not in taken)
                calls.append(PlannedCall(tool, seed, remembered))
                continue
        if not same_key:
            calls.append(PlannedCall(tool, seed))
            continue
        arguments = _peek_arguments(tool, seed)
        if slot and rng.random() < same_key and arguments is not None:
            kinds = {kind for _, kind in tool.keys}
            earlier = [key for key in taken if key[0] in kinds]
            if earlier:
                kind, value = earlier[rng.randrange(len(earlier))]
                names = [name for name, k in tool.keys if k == kind]
                if value not in (arguments.get(name) for name in names):
                    arguments = {**arguments, names[rng.randrange(len(names))]: value}
                pairs += 1
        taken.extend(key for key in _keys(tool, arguments) if key not in taken)
        calls.append(PlannedCall(tool, seed, arguments))
    return Turn(number, tuple(calls), pairs)


def run_turn(adapter: ToolAdapter | McpToolAdapter, agent_id: str, turn: Turn,
             memory: Memory | None = None) -> TurnFigures:
    """Run the turn's calls at once, each in a greenlet of its own, and wait for all of them
    (then `memory` keeps what they read). An agent stopped meanwhile (its greenlet killed) stops
    its calls too, before it ends: none outlives it (each is reported interrupted or
    indeterminate, as any stopped call)."""
    started = perf_counter()
    calls = turn.calls
    if len(calls) == 1:
        records = [_call(adapter, agent_id, turn.number, 0, calls[0])]
    else:
        greenlets = [gevent.spawn(_call, adapter, agent_id, turn.number, slot, call) for slot, call in enumerate(calls)]
        try:
            gevent.joinall(greenlets)
        finally:
            gevent.killall([greenlet for greenlet in greenlets if not greenlet.dead], block=True)
        for greenlet in greenlets:
            if greenlet.exception is not None:  # a harness bug: the agent's error, as outside a turn
                raise greenlet.exception
        records = [greenlet.value for greenlet in greenlets]
    if memory is not None:
        for record in records:
            memory.remember(record)
    return _figures(turn, records, perf_counter() - started)


def _call(adapter: ToolAdapter | McpToolAdapter, agent_id: str, number: int, slot: int,
          call: PlannedCall) -> CallRecord:
    return adapter.call(call.tool, agent_id, call.seed, arguments=call.arguments, turn=number, slot=slot)


def _conflicted(record: CallRecord) -> bool:
    """Any failed attempt of a conflict kind: the load's, or over MCP the server's, as it said."""
    return any(failure.counted_as_conflict for failure in (*record.failures, *record.server_failures))


def _figures(turn: Turn, records: list[CallRecord], latency_s: float) -> TurnFigures:
    conflicted = [_conflicted(record) for record in records]
    keys = [set(_keys(call.tool, record.arguments)) for call, record in zip(turn.calls, records)]
    spans = [(record.started_ns, record.started_ns + round(record.duration_s * 1e9)) for record in records]
    overlapping = collisions = 0
    for i in range(len(records)):
        for j in range(i + 1, len(records)):
            if keys[i] & keys[j] and spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]:
                overlapping += 1
                collisions += conflicted[i] or conflicted[j]
    return TurnFigures(calls=len(records), latency_s=latency_s, conflicted=any(conflicted),
                       same_key_pairs=turn.same_key_pairs, overlapping_same_key_pairs=overlapping,
                       collisions=collisions)
