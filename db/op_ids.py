"""Operation ids kept compactly: 16 bytes an id, in one growing buffer.

A soak of ten million calls keeps every call's id with its outcome; as `uuid.UUID` objects in
lists that is about 108 bytes a call (over 1 GB), as raw bytes it is 16. The same bytes are
what a worker ships to the master and what the audits copy into PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

__all__ = ["OpIds", "ID_BYTES"]

ID_BYTES = 16


class OpIds:
    """A list of operation ids; the raw bytes of each, appended in order."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes | bytearray = b"") -> None:
        if len(raw) % ID_BYTES:
            raise ValueError(f"operation ids come in {ID_BYTES}-byte pieces, not {len(raw)} bytes")
        self._raw = bytearray(raw)

    @classmethod
    def of(cls, op_ids: Iterable[uuid.UUID]) -> OpIds:
        return cls(b"".join(op.bytes for op in op_ids))

    def add(self, op_id: uuid.UUID) -> None:
        self._raw += op_id.bytes

    def extend(self, other: OpIds) -> None:
        self._raw += other._raw

    def __len__(self) -> int:
        return len(self._raw) // ID_BYTES

    def __bool__(self) -> bool:
        return bool(self._raw)

    def raw(self) -> Iterator[bytes]:
        """Each id's 16 bytes."""
        view = bytes(self._raw)
        return (view[i : i + ID_BYTES] for i in range(0, len(view), ID_BYTES))

    def __iter__(self) -> Iterator[uuid.UUID]:
        return (uuid.UUID(bytes=raw) for raw in self.raw())

    def as_set(self) -> set[bytes]:
        return set(self.raw())

    def to_wire(self) -> bytes:
        return bytes(self._raw)

    def __repr__(self) -> str:
        return f"OpIds({len(self)} ids)"
