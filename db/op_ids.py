"""Operation ids kept compactly, each with the value its call handed the agent.

A soak of ten million calls keeps every call's id with its outcome; as `uuid.UUID` objects in
lists that is about 108 bytes a call (over 1 GB), as raw bytes it is 16. Beside each id goes the
call's value (what the tool returned: the job a dequeue took, the balance a read saw, what a
write wrote), as one line of compact JSON: `null` when the tool returned nothing. The same bytes
are what a worker ships to the master and what the audits copy into PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["OpIds", "ID_BYTES", "encode_value"]

ID_BYTES = 16
_NULL = b"null"
_encode = json.JSONEncoder(separators=(",", ":")).encode


def encode_value(value: Any) -> bytes:
    """A call's value as one line of JSON (json.dumps never writes a newline unescaped)."""
    return _NULL if value is None else _encode(value).encode()


class OpIds:
    """A list of operation ids with their values: the raw bytes of each id, appended in order,
    and the values' JSON lines, one per id in the same order."""

    __slots__ = ("_raw", "_values")

    def __init__(self, raw: bytes | bytearray = b"", values: bytes | bytearray | None = None) -> None:
        if len(raw) % ID_BYTES:
            raise ValueError(f"operation ids come in {ID_BYTES}-byte pieces, not {len(raw)} bytes")
        self._raw = bytearray(raw)
        if values is None:
            values = b"".join(_NULL + b"\n" for _ in range(len(raw) // ID_BYTES))
        lines = values.count(b"\n")
        if lines != len(raw) // ID_BYTES:
            raise ValueError(f"{lines} values for {len(raw) // ID_BYTES} operation ids")
        self._values = bytearray(values)

    @classmethod
    def of(cls, op_ids: Iterable[uuid.UUID], values: Iterable[Any] | None = None) -> OpIds:
        kept = cls()
        for op_id, value in zip(op_ids, values) if values is not None else ((op, None) for op in op_ids):
            kept.add(op_id, value)
        return kept

    def add(self, op_id: uuid.UUID, value: Any = None) -> None:
        self._raw += op_id.bytes
        self._values += encode_value(value) + b"\n"

    def extend(self, other: OpIds) -> None:
        self._raw += other._raw
        self._values += other._values

    def __len__(self) -> int:
        return len(self._raw) // ID_BYTES

    def __bool__(self) -> bool:
        return bool(self._raw)

    def raw(self) -> Iterator[bytes]:
        """Each id's 16 bytes."""
        view = bytes(self._raw)
        return (view[i : i + ID_BYTES] for i in range(0, len(view), ID_BYTES))

    def raw_with_values(self) -> Iterator[tuple[bytes, str]]:
        """Each id's 16 bytes with its value's JSON text, one value decoded at a time: an audit
        copying a run's values holds no list of them all."""
        start = 0
        for raw in self.raw():
            end = self._values.index(b"\n", start)
            yield raw, self._values[start:end].decode()
            start = end + 1

    def values(self) -> Iterator[Any]:
        return (json.loads(text) for _, text in self.raw_with_values())

    def __iter__(self) -> Iterator[uuid.UUID]:
        return (uuid.UUID(bytes=raw) for raw in self.raw())

    def as_set(self) -> set[bytes]:
        return set(self.raw())

    def to_wire(self) -> list[bytes]:
        return [bytes(self._raw), bytes(self._values)]

    @classmethod
    def from_wire(cls, wire: list[bytes]) -> OpIds:
        raw, values = wire
        return cls(raw, values)

    @property
    def nbytes(self) -> int:
        """What the ids and their values take in memory (their buffers' contents)."""
        return len(self._raw) + len(self._values)

    def __repr__(self) -> str:
        return f"OpIds({len(self)} ids)"
