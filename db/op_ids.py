"""Operation ids kept compactly, each with the value its call handed the agent.

A soak of ten million calls keeps every call's id with its outcome; as `uuid.UUID` objects in
lists that is about 108 bytes a call (over 1 GB), as raw bytes it is 16. Beside each id goes the
call's value (what the tool returned: the job a dequeue took, the balance a read saw, what a
write wrote), as one line of compact JSON. A tool returns the same keys call after call, so a
dict's keys are kept once per OpIds (its shapes) and each line holds the shape's number and the
values alone: `{"debit":35,"amount":10,"version":1735}` is kept as `0[35,10,1735]`. The same
bytes are what a worker ships to the master; the audits get each value back as JSON text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["OpIds", "ID_BYTES"]

ID_BYTES = 16
_encode = json.JSONEncoder(separators=(",", ":")).encode
# A line is empty for None, "<shape>[values]" for a dict, "=<json>" for any other value.
_OTHER = "="


class OpIds:
    """A list of operation ids with their values: the raw bytes of each id, appended in order,
    and one line per id, in the same order, for its value."""

    __slots__ = ("_raw", "_lines", "_shapes", "_shape_numbers")

    def __init__(self, raw: bytes | bytearray = b"", lines: bytes | bytearray | None = None,
                 shapes: list[list[str]] | None = None) -> None:
        if len(raw) % ID_BYTES:
            raise ValueError(f"operation ids come in {ID_BYTES}-byte pieces, not {len(raw)} bytes")
        self._raw = bytearray(raw)
        self._lines = bytearray(lines if lines is not None else b"\n" * (len(raw) // ID_BYTES))
        lines_given = self._lines.count(b"\n")
        if lines_given != len(self):
            raise ValueError(f"{lines_given} values for {len(self)} operation ids")
        self._shapes: list[tuple[str, ...]] = [tuple(keys) for keys in shapes or ()]
        self._shape_numbers = {keys: number for number, keys in enumerate(self._shapes)}

    @classmethod
    def of(cls, op_ids: Iterable[uuid.UUID], values: Iterable[Any] | None = None) -> OpIds:
        kept = cls()
        for op_id, value in zip(op_ids, values) if values is not None else ((op, None) for op in op_ids):
            kept.add(op_id, value)
        return kept

    def add(self, op_id: uuid.UUID, value: Any = None) -> None:
        self._raw += op_id.bytes
        self._lines += self._line(value).encode() + b"\n"

    def _line(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, dict):
            keys = tuple(value)
            # A shape already kept has only text keys: a call's value is almost always one.
            number = self._shape_numbers.get(keys)
            if number is None and all(isinstance(key, str) for key in keys):
                number = self._shape_number(keys)
            if number is not None:
                return f"{number}{_encode(list(value.values()))}"
        return _OTHER + _encode(value)

    def _shape_number(self, keys: tuple[str, ...]) -> int:
        number = self._shape_numbers.get(keys)
        if number is None:
            number = self._shape_numbers[keys] = len(self._shapes)
            self._shapes.append(keys)
        return number

    def extend(self, other: OpIds) -> None:
        numbers = [self._shape_number(keys) for keys in other._shapes]
        if numbers == list(range(len(numbers))):  # the usual case: one tool's own shapes
            self._lines += other._lines
        else:  # its shapes are numbered otherwise here: only the numbers change
            for text in other._texts():
                if text and not text.startswith(_OTHER):
                    bracket = text.index("[")
                    text = f"{numbers[int(text[:bracket])]}{text[bracket:]}"
                self._lines += text.encode() + b"\n"
        self._raw += other._raw

    def __len__(self) -> int:
        return len(self._raw) // ID_BYTES

    def __bool__(self) -> bool:
        return bool(self._raw)

    def raw(self) -> Iterator[bytes]:
        """Each id's 16 bytes."""
        view = bytes(self._raw)
        return (view[i : i + ID_BYTES] for i in range(0, len(view), ID_BYTES))

    def _texts(self) -> Iterator[str]:
        """Each value's line, decoded one at a time: an audit copying a run's values holds no
        list of them all."""
        lines, start = self._lines, 0
        for _ in range(len(self)):
            end = lines.index(b"\n", start)
            yield lines[start:end].decode()
            start = end + 1

    def _value(self, text: str) -> Any:
        if not text:
            return None
        if text.startswith(_OTHER):
            return json.loads(text[1:])
        bracket = text.index("[")
        return dict(zip(self._shapes[int(text[:bracket])], json.loads(text[bracket:])))

    def values(self) -> Iterator[Any]:
        """Each id's value, in order."""
        return (self._value(text) for text in self._texts())

    def raw_with_values(self) -> Iterator[tuple[bytes, str]]:
        """Each id's 16 bytes with its value as JSON text ("null" for None)."""
        members = [[_encode(key) + ":" for key in keys] for keys in self._shapes]
        return zip(self.raw(), (self._json_text(text, members) for text in self._texts()))

    def _json_text(self, text: str, members: list[list[str]]) -> str:
        if not text:
            return "null"
        if text.startswith(_OTHER):
            return text[1:]
        bracket = text.index("[")
        inner = text[bracket + 1:-1]
        elements = inner.split(",") if inner else []
        # Flat values (numbers, true, false, null, strings without a comma or an escape): the
        # commas are the elements' own, and no line need be decoded (an audit copies millions of
        # values; decoding each costs several times this).
        if "\\" in inner or "[" in inner or "{" in inner or any(e.count('"') not in (0, 2) for e in elements):
            return _encode(self._value(text))
        return "{" + ",".join(key + element for key, element in zip(members[int(text[:bracket])], elements)) + "}"

    def __iter__(self) -> Iterator[uuid.UUID]:
        return (uuid.UUID(bytes=raw) for raw in self.raw())

    def as_set(self) -> set[bytes]:
        return set(self.raw())

    def to_wire(self) -> list[Any]:
        return [bytes(self._raw), bytes(self._lines), [list(keys) for keys in self._shapes]]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> OpIds:
        raw, lines, shapes = wire
        return cls(raw, lines, shapes)

    def __repr__(self) -> str:
        return f"OpIds({len(self)} ids)"
