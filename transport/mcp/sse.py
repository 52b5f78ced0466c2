"""Server-Sent Events, as a Streamable HTTP server answers a request when it streams: the
event-stream interpretation of the HTML standard (fields, comments, events ended by a blank line),
for the `message` events that carry JSON-RPC messages.

Lines end in LF or CRLF (a lone CR, which the standard allows too, is not read as an end of line:
no MCP implementation known sends one). Comments (`: ping`, a keep-alive) and events without data
(the priming event that gives only an `id`) carry no message and are skipped; so are `id` and
`retry`: this client does not resume a broken stream (2026-07-28 removed resumption; in the
session era a stream that ends before its reply is a lost reply, see transport.mcp.exchange).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["EventStream", "message_data"]


class EventStream:
    """Lines in, the data of each complete `message` event out."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._first = True

    def feed(self, line: str) -> str | None:
        """Take one line (its end of line removed); the data of the event it ends, if it ends a
        `message` event that had data."""
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> str | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if event not in ("", "message"):
            return None
        return "\n".join(data) or None  # no data, or empty (the priming event): no message


def message_data(readline: Callable[[], bytes]) -> Iterator[str]:
    """The data of each `message` event of a stream read by `readline` (one line with its end,
    b"" at the end of the stream), as they arrive."""
    stream = EventStream()
    while raw := readline():
        data = stream.feed(raw.decode("utf-8").removesuffix("\n").removesuffix("\r"))
        if data is not None:
            yield data
