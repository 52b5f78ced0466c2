"""Moving a Redis stream's entries into a table of the run's schema, so that Redis keeps only
what was appended since the last drain: its footprint stays bounded however long the run.

A drain copies the entries after the last one copied, in stream order, and records how far it
got, in one PostgreSQL transaction; only once that has committed does it trim the copied
entries from the stream (XTRIM MINID: everything below the next id). Stream ids only grow (Redis
refuses an XADD below the last one), so an entry appended meanwhile is never trimmed uncopied,
and a drain cut short anywhere, run again whole, copies each entry once: before the commit
nothing of it counts, after it the recorded position says where to go on from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import redis
from psycopg import sql

__all__ = ["StreamId", "drain_stream"]

# Entries copied in one transaction: a drain that fell behind catches up in steps this size.
_BATCH = 5_000


@dataclass(frozen=True, order=True)
class StreamId:
    """A Redis stream entry's id, `<ms>-<seq>`."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str) -> StreamId:
        ms, seq = (raw.decode() if isinstance(raw, bytes) else raw).split("-")
        return cls(int(ms), int(seq))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def successor(self) -> StreamId:
        return StreamId(self.ms, self.seq + 1)


def _locked_through(conn: psycopg.Connection, schema: str, stream: str) -> StreamId | None:
    """The last entry of `stream` copied into PostgreSQL, or None; from here to the end of the
    transaction, other drains of the same stream wait."""
    table = sql.Identifier(schema, "drained_streams")
    # The row first, so that even the first two drains of a stream find one to lock.
    conn.execute(sql.SQL("INSERT INTO {} (stream) VALUES (%s) ON CONFLICT DO NOTHING").format(table), (stream,))
    row = conn.execute(
        sql.SQL("SELECT through_ms, through_seq FROM {} WHERE stream = %s FOR UPDATE").format(table), (stream,)
    ).fetchone()
    return StreamId(*row) if row and row[0] is not None else None


def drain_stream(
    conn: psycopg.Connection,
    schema: str,
    client: redis.Redis,
    stream: str,
    table: str,
    columns: Sequence[str],
    row_of: Callable[[dict[bytes, bytes]], tuple[Any, ...]],
) -> int:
    """Copy `stream`'s entries after the last one drained into `table` (stream_ms, stream_seq,
    *`columns` from `row_of(fields)`), then trim them from Redis; how many were copied."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, table),
        sql.SQL(", ").join(map(sql.Identifier, ("stream_ms", "stream_seq", *columns))),
    )
    copied = 0
    while True:
        with conn.transaction():
            through = _locked_through(conn, schema, stream)
            # redis-py types an entry for any client; this one is given raw bytes (no
            # decode_responses), and XRANGE answers a list, empty at the end, never nil.
            entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(
                stream, min="-" if through is None else f"({through}", count=_BATCH))
            if entries:
                with conn.cursor().copy(copy) as rows:
                    for raw_id, fields in entries:
                        entry_id = StreamId.parse(raw_id)
                        rows.write_row((entry_id.ms, entry_id.seq, *row_of(fields)))
                through = StreamId.parse(entries[-1][0])
                conn.execute(
                    sql.SQL("UPDATE {} SET through_ms = %s, through_seq = %s WHERE stream = %s").format(
                        sql.Identifier(schema, "drained_streams")),
                    (through.ms, through.seq, stream),
                )
        if through is not None:
            # Also what an earlier drain copied but could not trim (its Redis connection lost).
            client.xtrim(stream, minid=str(through.successor()), approximate=False)
        copied += len(entries)
        if len(entries) < _BATCH:
            return copied
