"""The anomalies a list-append history shows without any cycle (Elle's elle.list-append and
elle.txn): reads of failed appends (G1a), of intermediate states (G1b), a transaction's reads
disagreeing with its own writes (internal), two committed transactions that read the same state
of a key and both appended to it (lost-update), an element twice in one read
(duplicate-elements), two reads that no one order of appends explains (incompatible-order), and,
not Elle's, an element read that no op of the history appended (garbage-read)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any

from history_check.history import APPEND, READ, Op, possible_ops

__all__ = ["direct_anomalies", "sorted_values"]

Case = dict[str, Any]


def _reads(ops: Iterable[Op]) -> Iterable[tuple[Op, Hashable, tuple[Any, ...]]]:
    for op in ops:
        for f, k, v in op.mops:
            if f == READ and v is not None:
                yield op, k, v


def sorted_values(ops: list[Op]) -> dict[Hashable, list[tuple[Any, ...]]]:
    """Each key's distinct non-empty lists read by ok and info ops, shortest first (lists of one
    length in the order first read: the same answer on every run); a key never read but appended
    once by such an op has the one list [element]."""
    values: dict[Hashable, dict[tuple[Any, ...], None]] = {}
    possible = possible_ops(ops)
    for _, k, v in _reads(possible):
        if v:
            values.setdefault(k, {})[v] = None
    appends: dict[Hashable, list[Any]] = {}
    for op in possible:
        for f, k, v in op.mops:
            if f == APPEND:
                appends.setdefault(k, []).append(v)
    for k, elements in appends.items():
        if len(elements) == 1 and k not in values:
            values[k] = {(elements[0],): None}
    return {k: sorted(vs, key=len) for k, vs in values.items()}


def _incompatible_orders(values: dict[Hashable, list[tuple[Any, ...]]]) -> list[Case]:
    cases = []
    for k, vs in values.items():
        for a, b in zip(vs, vs[1:]):
            if b[:len(a)] != a:
                cases.append({"key": k, "values": [list(a), list(b)]})
                break
    return cases


def _duplicates(possible: list[Op]) -> list[Case]:
    cases = []
    for op, k, v in _reads(possible):
        if len(set(v)) != len(v):
            dups = {e: n for e, n in Counter(v).items() if n > 1}
            cases.append({"op": op, "mop": [READ, k, list(v)], "duplicates": dups})
    return cases


def _ok_reads(ops: Iterable[Op]) -> dict[Hashable, list[tuple[Op, tuple[Any, ...]]]]:
    """Each key's non-empty lists read by ok ops, with the op that read each."""
    reads: dict[Hashable, list[tuple[Op, tuple[Any, ...]]]] = {}
    for op, k, v in _reads(o for o in ops if o.type == "ok"):
        if v:
            reads.setdefault(k, []).append((op, v))
    return reads


def _reads_of(reads: dict[Hashable, list[tuple[Op, tuple[Any, ...]]]],
              wrong: dict[Hashable, set[Any]]) -> Iterable[tuple[Op, Hashable, tuple[Any, ...], Any]]:
    """Each read of an element `wrong` names for its key (each key's elements read are gathered
    first, in C: a history whose reads are right costs no loop over their elements)."""
    for k, key_reads in reads.items():
        if k not in wrong:
            continue
        hit = set().union(*(v for _, v in key_reads)) & wrong[k]
        if hit:
            for op, v in key_reads:
                for e in v:
                    if e in hit:
                        yield op, k, v, e


def _g1a(ops: list[Op], reads: dict[Hashable, list[tuple[Op, tuple[Any, ...]]]]) -> list[Case]:
    failed: dict[Hashable, dict[Any, Op]] = {}
    for op in ops:
        if op.type == "fail":
            for f, k, v in op.mops:
                if f == APPEND:
                    failed.setdefault(k, {})[v] = op
    return [{"op": op, "mop": [READ, k, list(v)], "writer": failed[k][e], "element": e}
            for op, k, v, e in _reads_of(reads, {k: set(elements) for k, elements in failed.items()})]


def _g1b(ops: list[Op]) -> list[Case]:
    intermediate: dict[tuple[Hashable, Any], Op] = {}
    for op in ops:
        last: dict[Hashable, Any] = {}
        for f, k, v in op.mops:
            if f == APPEND:
                if k in last:
                    intermediate[(k, last[k])] = op
                last[k] = v
    cases = []
    for op, k, v in _reads(o for o in ops if o.type == "ok"):
        writer = intermediate.get((k, v[-1])) if v else None
        if writer is not None and writer is not op:
            cases.append({"op": op, "mop": [READ, k, list(v)], "writer": writer, "element": v[-1]})
    return cases


def _internal(ops: list[Op]) -> list[Case]:
    """A read that disagrees with the transaction's own earlier read and appends of its key:
    the whole list when it read it before, else its appends must end the list, in order."""
    cases = []
    for op in ops:
        if op.type != "ok":
            continue
        known: dict[Hashable, tuple[bool, tuple[Any, ...]]] = {}  # key -> (whole list known, list or suffix)
        for f, k, v in op.mops:
            if f == APPEND:
                whole, seen = known.get(k, (False, ()))
                known[k] = (whole, seen + (v,))
            elif v is not None:
                if k in known:
                    whole, expected = known[k]
                    if (v != expected) if whole else (len(v) < len(expected) or v[len(v) - len(expected):] != expected):
                        cases.append({"op": op, "mop": [READ, k, list(v)],
                                      "expected": list(expected) if whole else ["...", *expected]})
                known[k] = (True, v)
    return cases


def _lost_updates(possible: list[Op]) -> list[Case]:
    """Ok transactions that read one state of a key (their first read of it) and then appended
    to it: two or more of them for one state is a lost update."""
    by_state: dict[tuple[Hashable, tuple[Any, ...]], list[Op]] = {}
    for op in possible:
        if op.type != "ok":
            continue
        read: dict[Hashable, tuple[Any, ...]] = {}
        wrote: set[Hashable] = set()
        for f, k, v in op.mops:
            if f == READ:
                if v is not None:
                    read.setdefault(k, v)
            elif k in read and k not in wrote:
                wrote.add(k)
                by_state.setdefault((k, read[k]), []).append(op)
    return [{"key": k, "value": list(v), "txns": txns} for (k, v), txns in by_state.items() if len(txns) > 1]


def _garbage(ops: list[Op], reads: dict[Hashable, list[tuple[Op, tuple[Any, ...]]]]) -> list[Case]:
    appended: dict[Hashable, set[Any]] = {k: set() for k in reads}
    for op in ops:
        for f, k, v in op.mops:
            if f == APPEND and k in appended:
                appended[k].add(v)
    cases = []
    for k, key_reads in reads.items():
        never = set().union(*(v for _, v in key_reads)) - appended[k]
        if never:
            cases += [{"op": op, "mop": [READ, k, list(v)], "element": e} for op, v in key_reads for e in v
                      if e in never]
    return cases


def direct_anomalies(ops: list[Op], values: dict[Hashable, list[tuple[Any, ...]]]) -> dict[str, list[Case]]:
    """Every direct anomaly found, by Elle's name; none missing from the map but the ones not seen."""
    possible = possible_ops(ops)
    reads = _ok_reads(ops)
    found = {
        "G1a": _g1a(ops, reads),
        "G1b": _g1b(ops),
        "internal": _internal(ops),
        "lost-update": _lost_updates(possible),
        "duplicate-elements": _duplicates(possible),
        "incompatible-order": _incompatible_orders(values),
        "garbage-read": _garbage(ops, reads),
    }
    return {name: cases for name, cases in found.items() if cases}
