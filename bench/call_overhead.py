"""The harness's own CPU cost per tool call, without Locust's loop or the other clients.

    .venv/bin/python bench/call_overhead.py --pg-dsn postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/0 [--agents 16] [--seconds 5] [--rounds 5]

In one process (gevent-patched, as under Locust), `--agents` greenlets run bench/transfer_tool.py's
transaction for `--seconds`, taking turns `--rounds` times:
- bare: each greenlet on a connection of its own, `with conn.transaction()`, as
  bench/bare_locust.py does;
- toolclash: each greenlet as an agent does, through the harness's Load (its pool, the adapter,
  metrics with every operation id, the call hooks), both firing Locust's `request` event into
  a local runner's stats.
Prints the median CPU time (user + system of the process) per transaction of each, and their
difference: what the harness's path costs (or saves) per call, psycopg's and the server's
round trips included in both. Last, the harness's own path alone, exact to a fraction of a µs:
calls of a PostgreSQL tool that runs no statement (a connection borrowed and given back, the
COMMIT of an empty transaction costs no round trip, and every record, metric and event as for
any call), one greenlet, `--calls` of them.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402
from psycopg import sql  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bare_locust  # noqa: E402
import transfer_tool  # noqa: E402
from db.tool import Tool  # noqa: E402
from greenlet_calls import cpu_per_call, cpu_s  # noqa: E402
from harness.config.declared import add_arguments  # noqa: E402
from harness.config.settings import Settings  # noqa: E402
from harness.run.load import Load  # noqa: E402
from toolclash_processes import add_server_arguments  # noqa: E402

SCHEMA = "toolclash_bench_call_overhead"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured window of each turn")
    parser.add_argument("--rounds", type=int, default=5, help="0: only the harness's own path alone")
    parser.add_argument("--calls", type=int, default=100_000, help="calls of the tool that runs no statement")
    args = parser.parse_args()

    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))
        transfer_tool.setup(conn)

    environment = Environment()
    environment.create_local_runner()  # its `request` listener logs into Locust's stats, as in a run
    options = get_parser()
    add_arguments(options)
    settings = Settings.from_options(options.parse_args(
        ["--tools-module", str(ROOT / "bench" / "transfer_tool.py"), "--tool-work", "0", "--schema", SCHEMA,
         "--pool-size", str(args.agents)]))
    load = Load(settings, environment.events.request, 0)
    load.pg_dsn, load.redis_url = args.pg_dsn, args.redis_url
    if load.start(args.agents, seed=1) is not None:
        raise SystemExit("the load's pool did not open")
    agents = [load.next_agent() for _ in range(args.agents)]

    def toolclash_call(index: int) -> None:
        agent_id, rng = agents[index]
        load.adapter.call(load.toolbox.pick(rng), agent_id, rng.getrandbits(64))

    users = []
    for _ in range(args.agents):
        user = bare_locust.Transfer(environment)
        user.conn = psycopg.connect(args.pg_dsn, options=f"-c search_path={SCHEMA}")
        users.append(user)

    def bare_call(index: int) -> None:
        users[index].transfer()

    measured: dict[str, list[float]] = {"bare psycopg 3": [], "toolclash": []}
    for _ in range(args.rounds):
        measured["bare psycopg 3"].append(cpu_per_call(bare_call, args.agents, args.seconds)[0])
        measured["toolclash"].append(cpu_per_call(toolclash_call, args.agents, args.seconds)[0])
    no_statement = Tool("no_statement", lambda tx: None)
    agent_id, rng = agents[0]
    cpu_before = cpu_s()
    for _ in range(args.calls):
        rng.random()  # the agent's draw of its tool
        load.adapter.call(no_statement, agent_id, rng.getrandbits(64))
    harness_alone = (cpu_s() - cpu_before) / args.calls * 1e6
    load.stop()
    for user in users:
        user.conn.close()
    with psycopg.connect(args.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))

    if args.rounds:  # 0: the harness's own path alone
        medians = {name: statistics.median(values) for name, values in measured.items()}
        print(f"{args.agents} greenlets, {args.rounds} turns of {args.seconds:g} s each,"
              f" load average {os.getloadavg()[0]:.1f}")
        for name, values in measured.items():
            turns = ", ".join(f"{v:.0f}" for v in values)
            print(f"{name:<16}{medians[name]:>7.0f} µs CPU a transaction (median; turns: {turns})")
        print(f"{'harness':<16}{medians['toolclash'] - medians['bare psycopg 3']:>+7.0f} µs a call")
    print(f"the harness's own path alone: {harness_alone:.1f} µs CPU a call"
          f" (a tool with no statement, {args.calls} calls)")


if __name__ == "__main__":
    main()
