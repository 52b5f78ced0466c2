"""--trace: a real agent's turns, replayed by the agents instead of the turn model.

The file is JSON lines (docs/agents.md, "Replaying a trace"). Its first line may map the trace's
tool names to the run's tools, `{"map": {"get_balance": "summarize_accounts"}}`; a name it does
not map is a tool's own name. Every other line is one turn of one of the trace's agents, in that
agent's order: `{"agent": "a1", "think_ms": 1200, "calls": [{"tool": "deduct_credits",
"arguments": {"account": 3, "amount": 5}}]}`: how long the model thought before the turn, then
the calls it made at once. The arguments given are the call's; those left out are drawn from
the call's seed, as for any call. Anything the run could not replay as written (a tool that is
not the run's, an argument the tool does not take or of the wrong type, a key past the run's
data, a negative think time, no turn at all) is refused with the file and the line, before any
load. How the agents take the trace's agents: harness.run.planners.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from db.tool import Arguments, Tool
from harness.config.declared import OPTIONS
from harness.config.option import BadOption
from harness.config.turns import MOST_CALLS
from tasks.scenarios import SCENARIOS, Scenario, ScenarioParams

__all__ = ["Trace", "TraceCall", "TraceTurn", "load_trace", "refuse_turn_model_options"]

# The options a trace replaces: its turns say how long the agents think and which calls they make.
_REPLACED = ("--think-time", "--calls-per-turn", "--same-key")


@dataclass(frozen=True)
class TraceCall:
    tool: Tool
    arguments: Arguments  # as the trace gives them; those left out are drawn from the call's seed


@dataclass(frozen=True)
class TraceTurn:
    think_s: float  # the model's time before the turn's calls
    calls: tuple[TraceCall, ...]


@dataclass(frozen=True)
class Trace:
    path: str
    sha256: str  # of the file's bytes: every worker must replay the same trace
    # The trace's agents in the order of their first line, each with its turns in order.
    agents: tuple[tuple[str, tuple[TraceTurn, ...]], ...]

    @property
    def most_calls(self) -> int:
        """The most calls a turn of the trace runs at once."""
        return max(len(turn.calls) for _, turns in self.agents for turn in turns)


def refuse_turn_model_options(options: Any) -> None:
    """A trace says how the agents think and what they call: --think-time, --calls-per-turn and
    --same-key, which say it for the turn model, are refused beside it rather than ignored."""
    for option in (o for o in OPTIONS if o.flag in _REPLACED):
        if getattr(options, option.dest) != option.typed(option.default):
            raise BadOption(f"{option.flag} with --trace: the trace gives each turn's think time and calls;"
                            f" leave {option.flag} out")


def load_trace(path: str, scenarios: tuple[Scenario, ...], params: ScenarioParams) -> Trace:
    """The trace at `path`, its calls on the tools of the run's `scenarios`; raises BadOption."""
    try:
        content = Path(path).read_bytes()
        text = content.decode("utf-8")
    except OSError as exc:
        raise BadOption(f"--trace {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadOption(f"--trace {path}: not UTF-8 text (JSON lines, one turn per line)") from None
    reader = _Reader(path, scenarios, params)
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            reader.read(number, line)
    if not reader.agents:
        raise BadOption(f"--trace {path}: no turn in it (one JSON object per line: agent, think_ms, calls)")
    return Trace(path, hashlib.sha256(content).hexdigest(),
                 tuple((name, tuple(turns)) for name, turns in reader.agents.items()))


# The kinds of key a built-in tool's arguments name, and how many of each the run has.
def _key_counts(params: ScenarioParams) -> dict[str, int]:
    return {"account": params.accounts, "counter": params.counters, "team": params.teams}


class _Reader:
    """The lines of one trace, read in order."""

    def __init__(self, path: str, scenarios: tuple[Scenario, ...], params: ScenarioParams) -> None:
        self._path = path
        self._params = params
        self._tools = {wt.tool.name: wt.tool for scenario in scenarios for wt in scenario.tools(params)}
        # The run's tools that are the built-in ones: their arguments are checked as the tool server does.
        self._built_in = {wt.tool.name for scenario in scenarios if SCENARIOS.get(scenario.name) is scenario
                          for wt in scenario.tools(params)}
        self._names: dict[str, str] = {}  # the first line's map
        self._line = 0
        self.agents: dict[str, list[TraceTurn]] = {}

    def _refuse(self, why: str) -> BadOption:
        return BadOption(f"--trace {self._path} line {self._line}: {why}")

    def read(self, number: int, text: str) -> None:
        first = self._line == 0
        self._line = number
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._refuse(f"not JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(line, dict):
            raise self._refuse("a line is a JSON object: {\"agent\": ..., \"think_ms\": ..., \"calls\": [...]}")
        if "map" in line:
            if not first:
                raise self._refuse("\"map\" only on the trace's first line")
            return self._read_map(line)
        self._fields(line, required=("agent", "calls"), allowed=("think_ms",))
        agent, think_ms, calls = line["agent"], line.get("think_ms", 0), line["calls"]
        if not isinstance(agent, str) or not agent:
            raise self._refuse(f"\"agent\" {agent!r}: give the agent's name, a string")
        if isinstance(think_ms, bool) or not isinstance(think_ms, (int, float)) or not math.isfinite(think_ms) \
                or think_ms < 0:
            raise self._refuse(f"\"think_ms\" {think_ms!r}: give the model's time before the turn in ms, 0 or more")
        if not isinstance(calls, list) or not 1 <= len(calls) <= MOST_CALLS:
            raise self._refuse(f"\"calls\": give a list of 1 to {MOST_CALLS} calls, each {{\"tool\": ..., "
                               "\"arguments\": {...}}")
        turn = TraceTurn(think_ms / 1000.0, tuple(self._call(call) for call in calls))
        self.agents.setdefault(agent, []).append(turn)

    def _fields(self, line: dict[str, Any], required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        missing = [name for name in required if name not in line]
        unknown = [name for name in line if name not in (*required, *allowed)]
        if missing or unknown:
            names = ", ".join(f'"{name}"' for name in (*required, *allowed))
            why = f"no \"{missing[0]}\"" if missing else f"unknown field \"{unknown[0]}\""
            raise self._refuse(f"{why} (a {'turn' if 'agent' in required else 'call'} has {names})")

    def _read_map(self, line: dict[str, Any]) -> None:
        names = line["map"]
        if len(line) > 1 or not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise self._refuse("the map line is {\"map\": {\"trace's tool name\": \"tool\", ...}} alone")
        for name, tool in names.items():
            self._tool_named(tool, f"\"map\" maps {name!r} to {tool!r}, which")
        self._names = names

    def _tool_named(self, name: str, which: str) -> Tool:
        tool = self._tools.get(name)
        if tool is not None:
            return tool
        scenarios = [scenario.name for scenario in SCENARIOS.values()
                     if any(wt.tool.name == name for wt in scenario.tools(self._params))]
        if scenarios:
            raise self._refuse(f"{which} is not a tool of this run's scenarios: add {' or '.join(scenarios)} to"
                               " --scenario")
        raise self._refuse(f"{which} is not a tool of this run ({', '.join(self._tools)}); map it to one on the"
                           " trace's first line: {\"map\": {\"its name\": \"tool\"}}")

    def _call(self, call: Any) -> TraceCall:
        if not isinstance(call, dict):
            raise self._refuse(f"a call {call!r}: give {{\"tool\": ..., \"arguments\": {{...}}}}")
        self._fields(call, required=("tool",), allowed=("arguments",))
        name, arguments = call["tool"], call.get("arguments", {})
        if not isinstance(name, str):
            raise self._refuse(f"\"tool\" {name!r}: give the tool's name, a string")
        tool = self._tool_named(self._names.get(name, name), f"tool {name!r}" + (
            f" (mapped to {self._names[name]!r})" if name in self._names else ""))
        if not isinstance(arguments, dict):
            raise self._refuse(f"{name}'s \"arguments\" {arguments!r}: give an object of the arguments by name")
        if arguments:
            self._check_arguments(tool, arguments)
        return TraceCall(tool, arguments)

    def _check_arguments(self, tool: Tool, given: Arguments) -> None:
        """The arguments a tool's arguments step draws, by name, of the types it draws; a built-in
        tool's as its MCP inputSchema says, its keys among the run's accounts, counters, teams."""
        if tool.arguments is None:
            raise self._refuse(f"{tool.name} takes no arguments (it has no arguments step: it draws what it needs"
                               " from tx.rng); leave \"arguments\" out")
        try:
            drawn = tool.draw_arguments(0) or {}
        except Exception as exc:  # the user's arguments step: its error is the trace's refusal
            raise self._refuse(f"{tool.name}'s arguments step raised {type(exc).__name__}: {exc}") from None
        for name, value in given.items():
            if name not in drawn:
                raise self._refuse(f"{tool.name} takes no argument {name!r} (it takes: {', '.join(drawn) or 'none'})")
            if drawn[name] is not None and type(value) is not type(drawn[name]):
                raise self._refuse(f"{tool.name}'s {name} {value!r}: give one of type {type(drawn[name]).__name__},"
                                   " as its arguments step draws")
        if tool.name not in self._built_in:
            return
        # Here, not at the top: the server's models import the MCP SDK, 0.45 s that every load
        # process (each worker, each capacity probe) would pay at start-up for a trace it has not.
        from toolserver.schemas import arguments_model

        try:
            arguments_model(tool.name).model_validate({**drawn, **given})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise self._refuse(f"{tool.name}'s {'.'.join(map(str, error['loc']))} {error.get('input')!r}:"
                               f" {error['msg']}") from None
        counts = _key_counts(self._params)
        for name, kind in tool.keys:
            if name in given and kind in counts and given[name] > counts[kind]:
                raise self._refuse(f"{tool.name}'s {name} {given[name]}: the run has {counts[kind]} {kind}s"
                                   f" (--{kind}s): give 1 to {counts[kind]}")
