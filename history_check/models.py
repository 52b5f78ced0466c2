"""Consistency models and the anomalies each forbids, as data: ported from Elle's
elle.consistency-model (implied-anomalies, models, direct-proscribed-anomalies,
canonical-model-names), so that "which anomalies break serializability" has the same answer
here as in Elle. A model forbids what it proscribes directly, what every model it implies
proscribes, and every anomaly that implies one of those (G0 implies G1c, so whatever forbids
G1c forbids G0)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ALL_MODELS", "IMPLIED_ANOMALIES", "UnknownModel", "anomalies_prohibited_by", "canonical",
           "friendly", "impossible_models"]

# a -> b: an anomaly a is also an anomaly b (Elle's implied-anomalies).
IMPLIED_ANOMALIES: Mapping[str, tuple[str, ...]] = {
    "G0": ("G1c", "G0-process"),
    "G0-process": ("G1c-process", "G0-realtime"),
    "G0-realtime": ("G1c-realtime",),
    "G1a": ("G1",),
    "G1b": ("G1",),
    "G1c": ("G1", "G1c-process"),
    "G1c-process": ("G1c-realtime", "G1-process"),
    "G1c-realtime": ("G1-realtime",),
    "G1": ("G1-process",),
    "G1-process": ("G1-realtime",),
    "G-single-item": ("G-single", "G-single-item-process", "G-nonadjacent-item"),
    "G-single-item-process": ("G-single-process", "G-single-item-realtime", "G-nonadjacent-item-process"),
    "G-single-item-realtime": ("G-single-realtime", "G-nonadjacent-item-realtime"),
    "G-single": ("G-nonadjacent", "GSIb", "G-single-process"),
    "G-single-process": ("G-nonadjacent-process", "G-single-realtime"),
    "G-single-realtime": ("G-nonadjacent-realtime",),
    "G-nonadjacent-item": ("G-nonadjacent", "G2-item", "G-nonadjacent-item-process"),
    "G-nonadjacent-item-process": ("G-nonadjacent-process", "G2-item-process", "G-nonadjacent-item-realtime"),
    "G-nonadjacent-item-realtime": ("G2-item-realtime", "G-nonadjacent-realtime"),
    "G-nonadjacent": ("G2", "G-nonadjacent-process"),
    "G-nonadjacent-process": ("G2-process", "G-nonadjacent-realtime"),
    "G-nonadjacent-realtime": ("G2-realtime",),
    "G2": ("G2-process",),
    "G2-item": ("G2", "G2-item-process"),
    "G2-item-process": ("G2-process", "G2-item-realtime"),
    "G2-item-realtime": ("G2-realtime",),
    "G2-process": ("G2-realtime",),
    "GSIa": ("GSI",),
    "GSIb": ("GSI",),
    "incompatible-order": ("G1a",),
    "future-read": ("G1c",),
    "dirty-update": ("G1a",),
    "lost-update": ("write-skew", "G2-item"),
    "write-skew": ("G2",),
    # Not Elle's: an element read that no operation of the history appended. Elle stops on it (its
    # version order has no writer); here it is an anomaly, a read of a write that never committed
    # as far as the history knows: an aborted attempt's (G1a) or one invented.
    "garbage-read": ("G1a",),
}

# Friendly names of Elle's models to its canonical ones (Adya's where he named them).
_CANONICAL = {
    "consistent-view": "PL-2+",
    "conflict-serializable": "PL-3",
    "cursor-stability": "PL-CS",
    "forward-consistent-view": "PL-FCV",
    "monotonic-snapshot-read": "PL-MSR",
    "monotonic-view": "PL-2L",
    "read-committed": "PL-2",
    "read-uncommitted": "PL-1",
    "repeatable-read": "PL-2.99",
    "serializable": "PL-3",
    "snapshot-isolation": "PL-SI",
    "strict-serializable": "PL-SS",
    "strong-serializable": "PL-SS",
    "update-serializable": "PL-3U",
    "strong-session-read-uncommitted": "strong-session-PL-1",
    "strong-session-read-committed": "strong-session-PL-2",
    "strong-read-uncommitted": "strong-PL-1",
    "strong-read-committed": "strong-PL-2",
}
_FRIENDLY = {**{v: k for k, v in _CANONICAL.items()}, "PL-3": "serializable", "PL-SS": "strict-serializable"}

# a -> b: a history that satisfies a satisfies b (Elle's models, in friendly names).
_MODELS: Mapping[str, tuple[str, ...]] = {
    "causal-cerone": ("read-atomic",),
    "consistent-view": ("cursor-stability", "monotonic-view"),
    "conflict-serializable": ("view-serializable",),
    "cursor-stability": ("read-committed", "PL-2"),
    "forward-consistent-view": ("consistent-view",),
    "PL-2": ("PL-1",),
    "PL-3": ("repeatable-read", "update-serializable"),
    "update-serializable": ("forward-consistent-view",),
    "monotonic-atomic-view": ("read-committed",),
    "monotonic-view": ("PL-2",),
    "monotonic-snapshot-read": ("PL-2",),
    "parallel-snapshot-isolation": ("causal-cerone", "update-atomic"),
    "prefix": ("causal-cerone",),
    "read-atomic": ("monotonic-atomic-view",),
    "read-committed": ("read-uncommitted",),
    "repeatable-read": ("cursor-stability", "monotonic-atomic-view"),
    "update-atomic": ("read-atomic",),
    "serializable": ("repeatable-read", "snapshot-isolation", "view-serializable"),
    "session-serializable": ("1SR",),
    "snapshot-isolation": ("forward-consistent-view", "monotonic-atomic-view", "monotonic-snapshot-read",
                           "parallel-snapshot-isolation", "prefix"),
    "strict-serializable": ("PL-3", "serializable", "linearizable", "snapshot-isolation", "strong-snapshot-isolation",
                            "strong-session-serializable"),
    "strong-session-PL-1": ("PL-1",),
    "strong-session-PL-2": ("PL-2", "strong-session-PL-1"),
    "strong-PL-1": ("strong-session-PL-1",),
    "strong-PL-2": ("strong-session-PL-2", "strong-PL-1"),
    "strong-session-serializable": ("serializable", "strong-session-snapshot-isolation"),
    "strong-session-snapshot-isolation": ("snapshot-isolation", "strong-session-PL-2"),
    "strong-serializable": ("session-serializable",),
    "strong-snapshot-isolation": ("strong-session-snapshot-isolation", "strong-PL-2"),
    "linearizable": ("sequential",),
    "sequential": ("causal",),
    "causal": ("writes-follow-reads", "PRAM"),
    "PRAM": ("monotonic-reads", "monotonic-writes", "read-your-writes"),
}

# What each model forbids over the models it implies (Elle's direct-proscribed-anomalies). The
# "...-cycle-exists" fallbacks of Elle are left out: a cycle found here is always named.
_DIRECT: Mapping[str, tuple[str, ...]] = {
    "causal-cerone": ("internal", "G1a"),
    "cursor-stability": ("G1", "G-cursor", "lost-update"),
    "monotonic-view": ("G1", "G-monotonic"),
    "monotonic-snapshot-read": ("G1", "G-MSR"),
    "consistent-view": ("G1", "G-single"),
    "forward-consistent-view": ("G1", "G-SIb"),
    "parallel-snapshot-isolation": ("internal", "G1a"),
    "PL-3": ("G1", "G2", "predicate-read-miss"),
    "PL-2": ("G1",),
    "PL-1": ("G0", "duplicate-elements", "cyclic-versions"),
    "prefix": ("internal", "G1a"),
    "serializable": ("internal",),
    "snapshot-isolation": ("internal", "G1", "G-SI", "G-nonadjacent"),
    "read-atomic": ("internal", "G1a", "future-read"),
    "repeatable-read": ("G1", "G2-item", "lost-update"),
    "update-atomic": ("lost-update",),
    "strict-serializable": ("G1", "G1c-realtime", "G2-realtime"),
    "strong-session-PL-1": ("G0-process",),
    "strong-session-PL-2": ("G1c-process",),
    "strong-PL-1": ("G0-realtime",),
    "strong-PL-2": ("G1c-realtime",),
    "strong-session-snapshot-isolation": ("internal", "G1-process", "G-nonadjacent-process"),
    "strong-snapshot-isolation": ("internal", "G1-realtime", "G-nonadjacent-realtime"),
    "strong-session-serializable": ("G1-process", "G2-process"),
    "update-serializable": ("G1", "G-update"),
}


class UnknownModel(ValueError):
    pass


def canonical(model: str) -> str:
    return _CANONICAL.get(model, model)


def friendly(model: str) -> str:
    return _FRIENDLY.get(model, model)


def _edges(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """A graph with its vertices canonical."""
    out: dict[str, set[str]] = {}
    for a, bs in graph.items():
        out.setdefault(canonical(a), set()).update(canonical(b) for b in bs)
    return out


def _inverse(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Each vertex's predecessors."""
    into: dict[str, set[str]] = {}
    for a, bs in graph.items():
        for b in bs:
            into.setdefault(b, set()).add(a)
    return into


_MODEL_GRAPH = _edges(_MODELS)
_MODEL_GRAPH_IN = _inverse(_MODEL_GRAPH)
_DIRECT_CANONICAL = _edges(_DIRECT)
_IMPLIED_IN = _inverse(IMPLIED_ANOMALIES)

ALL_MODELS = frozenset(set(_MODEL_GRAPH) | {b for bs in _MODEL_GRAPH.values() for b in bs} | set(_CANONICAL)
                       | set(_CANONICAL.values()) | set(_DIRECT_CANONICAL))


def _reach(graph: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def implied_anomalies(anomalies: Iterable[str]) -> set[str]:
    """The anomalies these are also (themselves included)."""
    return _reach(IMPLIED_ANOMALIES, anomalies)


def anomalies_prohibited_by(model: str) -> frozenset[str]:
    """Every anomaly that must not be seen in a history of `model`. UnknownModel if not a model."""
    if model not in ALL_MODELS:
        known = ", ".join(sorted(set(map(friendly, ALL_MODELS))))
        raise UnknownModel(f"unknown consistency model {model!r}; known: {known}")
    models = _reach(_MODEL_GRAPH, [canonical(model)])
    direct = {anomaly for m in models for anomaly in _DIRECT_CANONICAL.get(m, ())}
    return frozenset(_reach(_IMPLIED_IN, direct))


def impossible_models(anomalies: Iterable[str]) -> tuple[list[str], list[str]]:
    """Elle's boundary: the weakest models these anomalies rule out (`not`), and the stronger
    ones they rule out too (`also_not`), in friendly names."""
    implied = implied_anomalies(anomalies)
    direct = {m for m, forbidden in _DIRECT_CANONICAL.items() if implied & set(forbidden)}
    impossible = _reach(_MODEL_GRAPH_IN, direct)
    weakest = {m for m in impossible
               if not (_reach(_MODEL_GRAPH, [m]) - {m}) & impossible}
    return sorted(map(friendly, weakest)), sorted(map(friendly, impossible - weakest))
