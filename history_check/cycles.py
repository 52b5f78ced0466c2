"""Cycles in one strongly connected component, searched kind by kind as Elle does
(elle.txn/cycle-anomaly-specs): G0 (ww only), G1c (ww and wr, at least one wr),
G-single-item (exactly one rw), G-nonadjacent-item (two or more rw, no two adjacent),
G2-item (two or more rw, some adjacent), then each again with process edges (-process) and
with real-time edges (-realtime), which the cycle must use. Without predicates every
anti-dependency is an item's, so these are the -item kinds of Elle's names.

Each kind is found by breadth-first search from the target of an "anchor" edge (an rw edge for
the kinds with one, a wr edge for G1c, a ww or process/real-time edge for G0) back to its
source, over states that carry what the cycle still needs (how many rw edges, whether the last
edge was one, whether a required relation was used): the first cycle found through a vertex is
a shortest one. A kind already implied by one found (G0 implies G1c...) is not searched. The
search has a budget of steps per component: past it, the component reports
cycle-search-timeout (Elle's: the answer is then unknown, not valid)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from history_check.graph import PROCESS, REALTIME, RW, WR, WW, Graph, strongly_connected
from history_check.models import implied_anomalies

__all__ = ["Cycle", "SearchBudget", "cycles_in_component"]


@dataclass(frozen=True)
class Cycle:
    kind: str
    ops: tuple[int, ...]  # op indexes; each depends on the one before it, the first on the last
    rels: tuple[int, ...]  # the relation of each step: ops[i] -> ops[i + 1], the last back to ops[0]


@dataclass(frozen=True)
class _Spec:
    kind: str
    plain: int  # relations the cycle may use besides rw
    rw: str  # "none", "single", "nonadjacent" or "multiple"
    anchor: int  # the relation of the edge the search closes
    required: int  # a relation the cycle must use somewhere (0: none)


def _specs(variants: int) -> list[_Spec]:
    base = [("G0", WW, "none", WW, 0), ("G1c", WW | WR, "none", WR, 0),
            ("G-single-item", WW | WR, "single", RW, 0), ("G-nonadjacent-item", WW | WR, "nonadjacent", RW, 0),
            ("G2-item", WW | WR, "multiple", RW, 0)]
    specs = [_Spec(*b) for b in base]
    for variant, suffix in ((PROCESS, "-process"), (REALTIME, "-realtime")):
        if variants & variant:
            for kind, plain, rw, anchor, _ in base:
                # G0's variant closes on the variant's edge: a ww anchor would find plain G0 first.
                specs.append(_Spec(kind + suffix, plain | variant, rw, variant if kind == "G0" else anchor, variant))
    return specs


def kind_of(rels: tuple[int, ...]) -> str:
    """Elle's classification of a cycle by its relations (elle.txn/cycle-explainer)."""
    rw = sum(1 for r in rels if r == RW)
    adjacent = any(a == RW and b == RW for a, b in zip(rels, rels[1:] + rels[:1]))
    if rw == 1:
        data = "G-single-item"
    elif rw > 1:
        data = "G2-item" if adjacent else "G-nonadjacent-item"
    elif WR in rels:
        data = "G1c"
    else:
        data = "G0"
    suffix = "-realtime" if REALTIME in rels else "-process" if PROCESS in rels else ""
    return data + suffix


class SearchBudget(Exception):
    pass


class _Steps:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise SearchBudget


def _search(g: Graph, members: set[int], spec: _Spec, steps: _Steps) -> Cycle | None:
    """The first cycle of `spec` found, trying each anchor target in turn."""
    if spec.rw == "none":
        # Its anchors and paths live in one component of the graph of its own relations.
        regions = [set(c) for c in strongly_connected(members, g.out, spec.plain)]
    else:
        regions = [members]
    for region in regions:
        anchors: dict[int, list[int]] = {}  # target -> sources
        for a in sorted(region):
            for b, rels in g.out.get(a, {}).items():
                if rels & spec.anchor and b in region:
                    anchors.setdefault(b, []).append(a)
        for b in sorted(anchors):
            found = _from(g, region, spec, b, set(anchors[b]), steps)
            if found is not None:
                return found
    return None


State = tuple[int, bool, int, bool]  # vertex, last edge rw, rw edges so far (2: two or more), required met


def _from(g: Graph, region: set[int], spec: _Spec, b: int, sources: set[int], steps: _Steps) -> Cycle | None:
    anchor_rw = spec.anchor == RW
    start: State = (b, anchor_rw, 1 if anchor_rw else 0, bool(spec.anchor & spec.required) or not spec.required)
    parent: dict[State, State | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        v, last_rw, rws, met = state
        for w, rels in g.out.get(v, {}).items():
            if w not in region:
                continue
            for nxt in _moves(spec, rels, last_rw, rws, met, w):
                steps.take()
                if nxt in parent:
                    continue
                parent[nxt] = state
                if w in sources and _closes(spec, nxt):
                    return _cycle(g, parent, nxt)
                queue.append(nxt)
    return None


def _moves(spec: _Spec, rels: int, last_rw: bool, rws: int, met: bool, w: int) -> Iterator[State]:
    """The states an edge to `w` with relations `rels` leads to: taken as one of the spec's plain
    relations, or as an rw edge where the spec allows one there."""
    for rel in (WW, WR, PROCESS, REALTIME):
        if rels & rel & spec.plain:
            yield w, False, rws, met or bool(rel & spec.required)
    if rels & RW and (spec.rw == "multiple" or spec.rw == "nonadjacent" and not last_rw):
        yield w, True, min(rws + 1, 2), met


def _closes(spec: _Spec, state: State) -> bool:
    _, last_rw, rws, met = state
    if not met:
        return False
    if spec.rw == "single":
        return rws == 1
    if spec.rw == "nonadjacent":
        return rws >= 2 and not last_rw
    if spec.rw == "multiple":
        return rws >= 2
    return True


# How a step is explained when its two transactions are related more than one way: Elle's
# explainers in their order (ww, wr, rw, then process or real time), the first that explains it.
_EXPLAINED_FIRST = (WW, WR, RW, PROCESS, REALTIME)


def _cycle(g: Graph, parent: dict[State, State | None], end: State) -> Cycle:
    """The cycle the search closed at `end`, each step explained as Elle explains it (so a
    real-time step between transactions that also read each other is a wr step, and the cycle
    may be of another kind than the one searched: Elle then keeps it not)."""
    vertices = []
    state: State | None = end
    while state is not None:
        vertices.append(state[0])
        state = parent[state]
    vertices.reverse()
    rels = tuple(next(rel for rel in _EXPLAINED_FIRST if g.rel(a, b) & rel)
                 for a, b in zip(vertices, vertices[1:] + vertices[:1]))
    return Cycle(kind_of(rels), tuple(vertices), rels)


def cycles_in_component(g: Graph, component: list[int], variants: int, budget: int) -> tuple[list[Cycle], bool]:
    """The cycles of each kind found in one component (at most one a kind), and whether the
    search ran out of its budget of steps."""
    members = set(component)
    found: list[Cycle] = []
    implied: set[str] = set()
    steps = _Steps(budget)
    try:
        for spec in _specs(variants):
            if spec.kind in implied:
                continue
            cycle = _search(g, members, spec, steps)
            # Elle keeps a cycle only when it is of the kind searched (a G2-item search may meet
            # a G-nonadjacent-item cycle first).
            if cycle is not None and cycle.kind == spec.kind:
                found.append(cycle)
                implied |= implied_anomalies([spec.kind])
    except SearchBudget:
        return found, True
    return found, False
