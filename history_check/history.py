"""A list-append history as the checker reads it: one Op per transaction that completed (or
never did: its invocation alone is an `info`), each with its process, outcome and micro-ops,
and where its invocation and completion stand in the history's order (for real-time order).

Micro-ops are Elle's: ("append", key, element) and ("r", key, list or None), keys and elements
any hashable value (lists read are tuples). An op's micro-ops are its completion's where it has
them, else its invocation's (an `info`'s reads are then unknown: None). An ok op's read of nil
read the empty list, as in Elle."""

from __future__ import annotations

import gc
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["APPEND", "READ", "BadHistory", "Mop", "Op", "build", "cyclic_gc_paused", "jsonable", "possible_ops"]

APPEND = "append"
READ = "r"
TYPES = ("ok", "fail", "info")

Mop = tuple[str, Hashable, Any]


class BadHistory(ValueError):
    """The input is not a list-append history (a malformed op, a micro-op of another kind)."""


@dataclass(frozen=True)
class Op:
    index: int  # its place among the history's ops, from 0
    id: str  # what names it to a person: the source's id, else its completion's index
    process: Hashable
    type: str  # ok, fail or info
    mops: tuple[Mop, ...]
    invoked_at: int  # position of its invocation in the history's events
    completed_at: int | None  # position of its completion; None for an invocation never completed

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "process": jsonable(self.process), "type": self.type,
                "value": [[f, jsonable(k), jsonable(v)] for f, k, v in self.mops]}


def possible_ops(ops: Iterable[Op]) -> list[Op]:
    """The ops that may have happened: all but the failed."""
    return [op for op in ops if op.type != "fail"]


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: ops as their maps, tuples as lists, anything else but a
    scalar as its text."""
    if isinstance(value, Op):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _mop(raw: Any, where: str) -> Mop:
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise BadHistory(f"{where}: a micro-op is [f, key, value], got {raw!r}")
    f, key, value = raw
    f = str(f).lstrip(":")
    if f not in (APPEND, READ):
        raise BadHistory(f"{where}: micro-op {f!r} is neither an append nor a read (list-append histories only)")
    if f == READ and value is not None:
        if not isinstance(value, (list, tuple)):
            raise BadHistory(f"{where}: a read's value is a list or nil, got {value!r}")
        value = _elements(value)
    return f, _hashable(key), _hashable(value) if f == APPEND else value


def _elements(values: list[Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    """A list read, as a tuple of hashable elements: at once when they are (numbers, strings: the
    usual case, hashed in C), else element by element."""
    elements = tuple(values)
    try:
        hash(elements)
    except TypeError:
        return tuple(_hashable(v) for v in elements)
    return elements


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        raise BadHistory(f"a key or element is a map: {value!r}")
    return value


def mops_of(value: Any, where: str) -> tuple[Mop, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise BadHistory(f"{where}: an op's value is a list of micro-ops, got {value!r}")
    return tuple(_mop(m, where) for m in value)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off for a while: a history is millions of small tuples and dicts,
    none in a reference cycle, whose allocation sets the collector scanning them all again and again
    (half the checker's time at 100,000 transactions); reference counting frees them all the same."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def build(events: Iterable[Mapping[str, Any]]) -> list[Op]:
    with cyclic_gc_paused():
        return _build(events)


def _build(events: Iterable[Mapping[str, Any]]) -> list[Op]:
    """The ops of a Jepsen-style history: events with `type` (invoke, ok, fail, info),
    `process` (0 when absent) and `value`, in the history's order; an `id` if the source names its ops. A
    completion pairs with its process's pending invocation. An event whose `f` is given and is
    not a transaction (`txn`) is not the checker's, and left out. BadHistory when malformed."""
    pending: dict[Hashable, tuple[int, Mapping[str, Any]]] = {}
    ops: list[Op] = []  # in the order of their completions, those never completed last
    for position, event in enumerate(events):
        where = f"event {position}"
        kind = str(event.get("type", "")).lstrip(":")
        f = event.get("f")
        if f is not None and str(f).lstrip(":") not in ("txn", "transaction"):
            continue
        process = _hashable(event.get("process", 0))  # none named: one process, as Elle's own examples
        if kind == "invoke":
            if process in pending:
                raise BadHistory(f"{where}: process {process!r} invoked again before its last op completed")
            pending[process] = (position, event)
        elif kind in TYPES:
            invoked = pending.pop(process, None)
            value = event.get("value")
            if invoked is not None and (value is None or kind == "fail" and not value):
                value = invoked[1].get("value")
            mops = mops_of(value, where)
            if kind == "info" and invoked is not None and event.get("value") is None:
                mops = tuple((f, k, None) if f == READ else (f, k, v) for f, k, v in mops)
            elif kind == "ok":  # a committed read of nil read the initial state, as Elle takes it
                mops = tuple((f, k, ()) if f == READ and v is None else (f, k, v) for f, k, v in mops)
            ident = event.get("id")
            ops.append(Op(index=len(ops), id=str(ident) if ident is not None else str(event.get("index", position)),
                          process=process, type=kind, mops=mops, invoked_at=invoked[0] if invoked else position,
                          completed_at=position))
        else:
            raise BadHistory(f"{where}: type {kind!r} is none of invoke, ok, fail, info")
    for process, (at, event) in pending.items():  # never completed: it may or may not have happened
        mops = tuple((f, k, None) if f == READ else (f, k, v)
                     for f, k, v in mops_of(event.get("value"), f"event {at}"))
        ident = event.get("id")
        ops.append(Op(len(ops), str(ident) if ident is not None else str(event.get("index", at)), process, "info",
                      mops, at, None))
    return ops
