"""Where an MCP call's client CPU goes, layer by layer, beside a bare client: in one process,
without Locust's loop or the other processes of a run.

    .venv/bin/python bench/mcp_client_layers.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--agents 150] [--era stateless] [--seconds 3] [--rounds 3]

Starts toolclash's tool server (`python -m toolserver`, 20 threads and 10 connections: the builtin
server's for 300 agents of the default mix) on a schema and Redis keys of its own, seeded as a
run's and dropped at the end, and has `--agents` greenlets (gevent-patched, as a load process)
call its tools, drawn as an agent draws them, for `--seconds`, one layer after the other,
`--rounds` times:
- bare: bench/bare_mcp_loop.py's agents, a plain geventhttpclient connection each;
- apart: the same, each reading an event stream's end in a greenlet of its own, as the client does
  (`--ends-apart`: the agent's next call does not wait for it; the same as bare in the stateless era);
- client: toolclash's MCP client (transport.mcp.client), a session per agent: `call_tool`;
- adapter: its adapter (transport.mcp.adapter): the call's record, op id, seeded arguments, and
  its result read as a careful client reads it, with no listener;
- load: the adapter as a load process has it (harness.run.load): Locust's `request` event into a
  local runner's statistics, and the metrics, which keep every op id with its value for the audits.
Prints each layer's CPU µs a call (median of its turns), and what it adds to the layer before.
The server is the limit all along (one process at a full core): what differs is the client's CPU.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from http.client import HTTPException  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402
from psycopg import sql  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bare_mcp_loop import BareAgent  # noqa: E402
from db.redis_keys import RedisKeys  # noqa: E402
from db.schema import begin_run, prepare  # noqa: E402
from greenlet_calls import cpu_per_call  # noqa: E402
from harness.config.declared import add_arguments  # noqa: E402
from harness.config.settings import Settings  # noqa: E402
from harness.run.load import Load  # noqa: E402
from harness.run.tool_server_process import ToolServerProcess  # noqa: E402
from toolclash_processes import add_server_arguments  # noqa: E402
from transport.hooks import Hook  # noqa: E402
from transport.mcp.adapter import McpToolAdapter  # noqa: E402
from transport.mcp.client import McpClient  # noqa: E402
from transport.mcp.exchange import McpTransportError  # noqa: E402

SCHEMA = "toolclash_bench_mcp_layers"
SERVER_OPTIONS = ("--threads", "20", "--pool-size", "10")


def _settings(*options: str) -> Settings:
    parser = get_parser()
    add_arguments(parser)
    return Settings.from_options(parser.parse_args(["--schema", SCHEMA, *options]))


def _counting_lost(call: Callable[[int], object], lost: dict[str, int], layer: str) -> Callable[[int], None]:
    """`call`, with a reply that never came counted for its layer rather than raised: a connection
    the server closes as it is used (idle past its keep-alive between two turns) is no call's
    end in the bare loop or toolclash's client alone (the adapter sends the call again)."""

    def counted(index: int) -> None:
        try:
            call(index)
        except (McpTransportError, OSError, HTTPException, StopIteration):
            lost[layer] += 1

    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--agents", type=int, default=150, help="a load process's share of 300 agents on 2")
    parser.add_argument("--era", choices=("stateless", "session"), default="stateless")
    parser.add_argument("--seconds", type=float, default=3.0, help="the measured window of each turn")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    baseline = _settings().params.baseline
    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        prepare(conn, SCHEMA, reset=True)
        begin_run(conn, SCHEMA, "mcp-client-layers", accounts=baseline.accounts,
                  initial_balance=baseline.initial_balance, counters=baseline.counters)
    with redis.Redis.from_url(args.redis_url) as client:
        RedisKeys(SCHEMA).clear(client)  # a queue left full by an earlier run would refuse every job
    server = ToolServerProcess(["--host", "127.0.0.1", "--port", "0", "--schema", SCHEMA, *SERVER_OPTIONS],
                               args.pg_dsn, args.redis_url)
    try:
        url = server.wait_until_serving()
        settings = _settings("--mcp-url", url, "--mcp-era", args.era)
        environment = Environment()
        environment.create_local_runner()  # its `request` listener logs into Locust's stats, as in a run
        load = Load(settings, environment.events.request, 0)
        load.mcp_url = url
        if load.start(args.agents, seed=1) is not None:
            raise SystemExit("the load's MCP client could not connect")
        agents = [load.next_agent() for _ in range(args.agents)]
        for agent_id, _ in agents:
            load.open_agent(agent_id)
        client = McpClient(settings.mcp.client_settings(url, args.agents))  # as the load's, its own connections
        client.connect()
        adapter = McpToolAdapter(client, settings.retry, Hook())
        sessions = [client.session() for _ in agents]
        bare = [BareAgent(url, args.era, f"bare-{agent_id}", random.Random(f"2:{agent_id}")) for agent_id, _ in agents]
        apart = [BareAgent(url, args.era, f"apart-{agent_id}", random.Random(f"3:{agent_id}"), ends_apart=True)
                 for agent_id, _ in agents]
        for agent in bare + apart:
            agent.open()

        def client_call(index: int) -> None:
            agent_id, rng = agents[index]
            tool = load.toolbox.pick(rng)
            sessions[index].call_tool(tool.name, tool.draw_arguments(rng.getrandbits(64)), uuid.uuid4(), agent_id)

        def adapter_call(index: int) -> None:
            agent_id, rng = agents[index]
            adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))

        def load_call(index: int) -> None:
            agent_id, rng = agents[index]
            load.adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))

        layers = {"bare": lambda index: bare[index].call(load.toolbox),
                  "apart": lambda index: apart[index].call(load.toolbox), "client": client_call,
                  "adapter": adapter_call, "load": load_call}
        turns: dict[str, list[tuple[float, float]]] = {name: [] for name in layers}
        lost = dict.fromkeys(layers, 0)
        for _ in range(args.rounds):
            for name, call in layers.items():
                turns[name].append(cpu_per_call(_counting_lost(call, lost, name), args.agents, args.seconds))
        for session in sessions:
            session.close()
        for agent in bare + apart:
            agent.close()
        adapter.close()
        client.close()
        load.stop()
    finally:
        server.stop(30.0)
        server.close()
    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))
    with redis.Redis.from_url(args.redis_url) as client:
        RedisKeys(SCHEMA).clear(client)

    print(f"{args.agents} greenlets in one process, the {args.era} era, {args.rounds} turns of {args.seconds:g} s"
          " a layer; CPU µs a call (median), what it adds (the median of each round's difference with the"
          " layer before, run just before it: a pair shares the machine's load of the moment), calls/s, the turns")
    before: list[tuple[float, float]] | None = None
    for name, measured in turns.items():
        median = statistics.median(cpu for cpu, _ in measured)
        added = "" if before is None else f"{statistics.median(a - b for (a, _), (b, _) in zip(measured, before)):+.0f}"
        print(f"{name:<9}{median:>6.0f}{added:>6}{statistics.median(rate for _, rate in measured):>7.0f}/s  "
              + ", ".join(f"{cpu:.0f}" for cpu, _ in measured)
              + (f"  ({lost[name]} calls without a reply)" if lost[name] else ""))
        before = measured


if __name__ == "__main__":
    main()
