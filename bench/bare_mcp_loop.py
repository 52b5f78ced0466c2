"""A bare MCP client: greenlets, each on a plain geventhttpclient connection of its own, making
the `tools/call`s toolclash's agents make, with none of toolclash's client or Locust's loop.

    .venv/bin/python bench/bare_mcp_loop.py --url http://127.0.0.1:8000/mcp --schema toolclash \\
        [--agents 150] [--seconds 20] [--era stateless|session] [--process-index 0]

One process of `--agents` greenlets for `--seconds`. Each picks its tools by weight from the
default mix and draws their arguments from their seeded arguments step (db.tool), from a random
source seeded as an agent's is (harness.run.load), and sends each call as toolclash's client does
(transport.mcp.client): the same JSON-RPC body (the op id in `_meta`, in the `Idempotency-Key`
header and as the `op_id` argument, which every tool of toolclash's server takes; the agent's id
in `_meta`) and the same headers (in the stateless era `MCP-Protocol-Version`, `Mcp-Method` and
`Mcp-Name` beside the era's `_meta`; in the session era the session's id and version, after
`initialize` and `notifications/initialized`). It reads each reply whole, decodes its JSON (the
`data:` line of an event stream) and looks at `isError`; no retry, no record, no event. With
`--ends-apart`, an event stream is read only to its reply's `data:` line, and its end (which the
server sends a moment later) in a bare greenlet of its own, on a second connection of the agent's,
as toolclash's client reads it (transport.mcp.exchange): the agent's next call does not wait for
the server to end the last one's stream. Without it, the agent waits, and its next call with it. At the
end it prints one JSON line: its calls, those whose result was `isError: true`, the replies
that were no result (a JSON-RPC error or no JSON), and the seconds the calls ran; with
`--calls-file`, its calls so far every 0.1 s as well, as a toolclash load process of a bench
counts them (toolclash_processes.count_calls_into).

Locust is imported only to read toolclash's options into the same tools and weights
(harness.run.load.Toolbox): it runs nothing here.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.config.declared import add_arguments  # noqa: E402
from harness.config.settings import Settings  # noqa: E402
from harness.run.load import Toolbox  # noqa: E402
from toolclash_processes import count_calls_into  # noqa: E402
from transport.mcp.settings import (  # noqa: E402
    AGENT_ID_META_KEY,
    CLIENT_INFO,
    OP_ID_META_KEY,
    SESSION_ERA_VERSION,
    STATELESS_ERA_VERSION,
)

_STATELESS_META = {"io.modelcontextprotocol/protocolVersion": STATELESS_ERA_VERSION,
                   "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
                   "io.modelcontextprotocol/clientCapabilities": {}}
_HEADERS = {"User-Agent": "toolclash", "Accept": "application/json, text/event-stream"}


def _toolbox(schema: str) -> Toolbox:
    from locust.argument_parser import get_parser

    parser = get_parser()
    add_arguments(parser)
    return Toolbox(Settings.from_options(parser.parse_args(["--schema", schema]), judge=False))


def _message(response) -> dict:
    """The JSON-RPC message of a reply: its body, or the `data:` line of its event stream."""
    body = response.read()
    if response.get("content-type", "").startswith("text/event-stream"):
        body = next(line for line in body.splitlines() if line.startswith(b"data: "))[6:]
    return json.loads(body)


def _message_ending_apart(response) -> dict:
    """The JSON-RPC message of a reply; an event stream read to its `data:` line only, its end in a
    greenlet of its own."""
    if not response.get("content-type", "").startswith("text/event-stream"):
        return _message(response)
    line = response.readline(b"\n")
    while not line.startswith(b"data: "):
        line = response.readline(b"\n")
    gevent.spawn_raw(_read_to_end, response)
    return json.loads(line[6:])


def _read_to_end(response) -> None:
    with gevent.Timeout(1.0, False):
        while not response.message_complete and response.read(4096):
            pass
    response.release()


class BareAgent:
    """One greenlet's connection, session (in the session era) and random source."""

    def __init__(self, url: str, era: str, agent_id: str, rng: random.Random, ends_apart: bool = False) -> None:
        parts = urlsplit(url)
        self._path = parts.path
        self._http = HTTPClient(parts.hostname, port=parts.port, headers=_HEADERS, concurrency=1 + ends_apart,
                                connection_timeout=5.0, network_timeout=35.0)
        self._read_reply = _message_ending_apart if ends_apart else _message
        self._era = era
        self._agent_id = agent_id
        self._rng = rng
        self._ids = 0
        self._session: dict[str, str] = {}

    def _post(self, message: dict, headers: dict[str, str]):
        body = json.dumps(message, separators=(",", ":")).encode()
        return self._http.request("POST", self._path, body=body,
                                  headers={**headers, **self._session, "Content-Type": "application/json"})

    def open(self) -> None:
        """In the session era, open its session: `initialize`, then `notifications/initialized`."""
        if self._era != "session":
            return
        self._ids += 1
        response = self._post({"jsonrpc": "2.0", "id": self._ids, "method": "initialize",
                               "params": {"protocolVersion": SESSION_ERA_VERSION, "capabilities": {},
                                          "clientInfo": CLIENT_INFO}}, {})
        version = _message(response)["result"]["protocolVersion"]
        self._session = {"Mcp-Session-Id": response["mcp-session-id"], "MCP-Protocol-Version": version}
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized", "params": {}}, {}).read()

    def close(self) -> None:
        if self._session:
            self._http.request("DELETE", self._path, headers=self._session).read()
        self._http.close()

    def call(self, toolbox: Toolbox) -> bool | None:
        """One call of the next tool; whether its result was isError (None: no result)."""
        tool = toolbox.pick(self._rng)
        arguments = tool.draw_arguments(self._rng.getrandbits(64))
        op_id = str(uuid.uuid4())
        meta = {OP_ID_META_KEY: op_id, AGENT_ID_META_KEY: self._agent_id}
        headers = {"Idempotency-Key": op_id}
        if self._era == "stateless":
            meta.update(_STATELESS_META)
            headers.update({"MCP-Protocol-Version": STATELESS_ERA_VERSION, "Mcp-Method": "tools/call",
                            "Mcp-Name": tool.name})
        self._ids += 1
        message = self._read_reply(self._post({"jsonrpc": "2.0", "id": self._ids, "method": "tools/call",
                                       "params": {"name": tool.name, "arguments": {**arguments, "op_id": op_id},
                                                  "_meta": meta}}, headers))
        result = message.get("result")
        return result.get("isError") is True if isinstance(result, dict) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the MCP endpoint of toolclash's tool server")
    parser.add_argument("--schema", required=True, help="the schema the server serves (the tools' Redis keys)")
    parser.add_argument("--agents", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--era", choices=("stateless", "session"), default="stateless")
    parser.add_argument("--process-index", type=int, default=0, help="names the agents, as a load process's")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ends-apart", action="store_true",
                        help="read an event stream's end in a greenlet of its own, as toolclash's client does")
    parser.add_argument("--calls-file", type=Path, help="where to write the calls so far, every 0.1 s")
    args = parser.parse_args()

    toolbox = _toolbox(args.schema)
    counts = {"calls": 0, "is_error": 0, "no_result": 0}
    stopping = False

    def run(agent: BareAgent) -> None:
        agent.open()
        while not stopping:
            is_error = agent.call(toolbox)
            counts["calls"] += 1
            counts["is_error"] += is_error is True
            counts["no_result"] += is_error is None
        agent.close()

    agent_ids = [f"p{args.process_index}-a{number}" for number in range(1, args.agents + 1)]
    agents = [BareAgent(args.url, args.era, agent_id, random.Random(f"{args.seed}:{agent_id}"), args.ends_apart)
              for agent_id in agent_ids]
    if args.calls_file is not None:
        count_calls_into(args.calls_file, lambda: counts["calls"])
    started = time.monotonic()
    greenlets = [gevent.spawn(run, agent) for agent in agents]
    gevent.sleep(args.seconds)
    stopping = True
    gevent.joinall(greenlets, raise_error=True)
    print(json.dumps({**counts, "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    main()
