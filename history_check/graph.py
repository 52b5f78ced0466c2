"""The dependency graph of a list-append history, as Elle infers it (elle.list-append/graph):
every key's version order is its longest list read (every other read being a prefix of it), and
from it, between ok and info transactions:

- ww: T2 appended the element right after T1's element;
- wr: T2 read a list whose last element T1 appended;
- rw: T1 read the state just before T2's append (an append never read comes after the last
  element read);

plus, when asked for, process order (each process's ok transactions one after another) and
real-time order (T1 completed before T2 was invoked; a transitive reduction, as Elle's). Edges
carry a bit per relation; the strongly connected components are found without recursion."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from history_check.history import APPEND, READ, Op, possible_ops

__all__ = ["PROCESS", "REALTIME", "RELS", "RW", "WR", "WW", "Graph", "dependency_graph", "strongly_connected"]

WW, WR, RW, PROCESS, REALTIME = 1, 2, 4, 8, 16
RELS = {WW: "ww", WR: "wr", RW: "rw", PROCESS: "process", REALTIME: "realtime"}
_INIT = object()  # the state before the first append of a key


class Graph:
    """Edges between op indexes, each a bitmask of relations."""

    def __init__(self) -> None:
        self.out: dict[int, dict[int, int]] = {}

    def link(self, a: int, b: int, rel: int) -> None:
        if a == b:
            return
        targets = self.out.setdefault(a, {})
        targets[b] = targets.get(b, 0) | rel

    def rel(self, a: int, b: int) -> int:
        return self.out.get(a, {}).get(b, 0)


class _Versions:
    """Each key's version order and who wrote and read each state."""

    def __init__(self, ops: list[Op], values: dict[Hashable, list[tuple[Any, ...]]]) -> None:
        self.order: dict[Hashable, tuple[Any, ...]] = {}
        self.position: dict[Hashable, dict[Any, int]] = {}
        for k, vs in values.items():
            longest = tuple(dict.fromkeys(vs[-1]))
            self.order[k] = longest
            self.position[k] = {e: i for i, e in enumerate(longest)}
        self.writer: dict[tuple[Hashable, Any], int] = {}
        self.readers: dict[tuple[Hashable, Any], list[int]] = {}
        for op in ops:
            for f, k, v in op.mops:
                if f == APPEND:
                    self.writer[(k, v)] = op.index
                elif v is not None:
                    self.readers.setdefault((k, v[-1] if v else _INIT), []).append(op.index)

    def previous(self, k: Hashable, element: Any) -> Any:
        """The element appended just before `element` (_INIT if it was the first); for an
        element never read, the last one read."""
        i = self.position.get(k, {}).get(element)
        order = self.order.get(k, ())
        if i is None:
            return order[-1] if order else _INIT
        return order[i - 1] if i else _INIT


def dependency_graph(ops: list[Op], values: dict[Hashable, list[tuple[Any, ...]]], *, process: bool = False,
                     realtime: bool = False) -> Graph:
    possible = possible_ops(ops)
    versions = _Versions(possible, values)
    g = Graph()
    for op in possible:
        for f, k, v in op.mops:
            if f == READ:
                if v:
                    writer = versions.writer.get((k, v[-1]))
                    if writer is not None:
                        g.link(writer, op.index, WR)
            else:
                prev = versions.previous(k, v)
                if prev is not _INIT:
                    writer = versions.writer.get((k, prev))
                    if writer is not None:
                        g.link(writer, op.index, WW)
                for reader in versions.readers.get((k, prev), ()):
                    g.link(reader, op.index, RW)
    if process:
        _process_order(possible, g)
    if realtime:
        _realtime_order(possible, g)
    return g


def _process_order(ops: Iterable[Op], g: Graph) -> None:
    last: dict[Hashable, int] = {}
    for op in ops:  # in completion order
        if op.type == "ok":
            if op.process in last:
                g.link(last[op.process], op.index, PROCESS)
            last[op.process] = op.index


def _realtime_order(ops: list[Op], g: Graph) -> None:
    """T1 -> T2 when ok T1 completed before T2 was invoked, reduced as Elle does: each
    invocation is linked from the completed ops not already known to precede another completed
    op."""
    events: list[tuple[int, int, Op]] = []
    for op in ops:
        events.append((op.invoked_at, 0, op))
        if op.type == "ok" and op.completed_at is not None:
            events.append((op.completed_at, 1, op))
    events.sort(key=lambda e: (e[0], e[1]))
    frontier: set[int] = set()
    preceded_by: dict[int, set[int]] = {}
    for _, completion, op in events:
        if completion:
            frontier -= preceded_by.get(op.index, set())
            frontier.add(op.index)
        else:
            preceded_by[op.index] = set(frontier)
            for a in frontier:
                g.link(a, op.index, REALTIME)


def strongly_connected(vertices: Iterable[int], out: dict[int, dict[int, int]], mask: int) -> list[list[int]]:
    """Tarjan's strongly connected components of the graph restricted to `vertices` and to edges
    with a relation in `mask`, with an explicit stack; only those with more than one vertex
    (there are no self edges)."""
    allowed = set(vertices)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    found: list[list[int]] = []
    counter = 0
    for root in sorted(allowed):
        if root in index:
            continue
        work: list[tuple[int, Any]] = [(root, None)]
        while work:
            v, it = work[-1]
            if it is None:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
                it = iter([w for w, rels in out.get(v, {}).items() if rels & mask and w in allowed])
                work[-1] = (v, it)
            advanced = False
            for w in it:
                if w not in index:
                    work.append((w, None))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
