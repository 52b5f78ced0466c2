"""update_plan against the real Redis when a connection dies at the worst moment: the server
applied EXEC, the agent never heard of it, and redis-py reports a WatchError that is retried."""

from __future__ import annotations

import socket
from contextlib import suppress
from functools import partial

import gevent
import redis
from gevent.server import StreamServer

from db.adapter import ToolAdapter

from db.call_record import Outcome
from db.errors import Failure
from db.redis_keys import RedisKeys
from db.retry import RetryPolicy
from db.tool import Tool
from tasks.agent_state import audit_agent_state, update_plan
from tests.support import Recorder, acknowledged_from, context_for

_EXEC = b"$4\r\nEXEC\r\n"  # how the EXEC of a MULTI block goes over the wire


class ExecReplyLosingProxy:
    """A proxy in front of the real Redis. For the first `losses` transactions it forwards EXEC,
    waits for the server's reply, and cuts the connection instead of passing the reply on: the
    server applied the transaction, the client only sees its connection drop."""

    def __init__(self, redis_url: str, losses: int) -> None:
        self._upstream = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
        self._to_lose = losses
        self.lost = 0
        self._server = StreamServer(("127.0.0.1", 0), self._relay)

    def client(self) -> redis.Redis:
        auth = {k: self._upstream[k] for k in ("db", "username", "password") if k in self._upstream}
        return redis.Redis(host="127.0.0.1", port=self._server.server_port, **auth)

    def __enter__(self) -> ExecReplyLosingProxy:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def _connect_upstream(self) -> socket.socket:
        if "path" in self._upstream:
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self._upstream["path"])
            return upstream
        return socket.create_connection((self._upstream.get("host", "localhost"), self._upstream.get("port", 6379)))

    def _relay(self, client: socket.socket, _address: object) -> None:
        upstream = self._connect_upstream()
        exec_to_lose = False

        def cut() -> None:
            for end in (client, upstream):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

        # gevent wakes a greenlet waiting on a socket that is shut down with an OSError: the
        # other direction has cut the connection.
        def to_server() -> None:
            nonlocal exec_to_lose
            with suppress(OSError):
                while data := client.recv(65536):
                    if self._to_lose and _EXEC in data:
                        self._to_lose -= 1
                        exec_to_lose = True  # before the server can answer
                    upstream.sendall(data)
            cut()

        requests = gevent.spawn(to_server)
        try:
            with suppress(OSError):
                while data := upstream.recv(65536):
                    if exec_to_lose:  # the server has answered the EXEC: it ran it
                        self.lost += 1
                        break
                    client.sendall(data)
        finally:
            cut()
            requests.join()
            upstream.close()


def test_a_lost_exec_reply_is_retried_without_applying_the_change_twice(servers, admin, schema):
    teams, agents, calls_each, losses = 2, 4, 10, 3
    keys = RedisKeys(schema)
    recorder = Recorder()
    plan_change = Tool("update_plan", partial(update_plan, keys=keys, teams=teams), backend="redis")
    with ExecReplyLosingProxy(servers.redis_url, losses) as proxy, proxy.client() as client:
        # A Redis tool borrows no PostgreSQL connection: no pool.
        adapter = ToolAdapter(None, client, RetryPolicy(max_tries=20, base_s=0.001, cap_s=0.01), 0.0,
                              recorder.request, recorder.call_finished)

        def agent(number: int) -> None:
            for call in range(calls_each):
                adapter.call(plan_change, f"agent-{number}", seed=number * 1000 + call)

        gevent.joinall([gevent.spawn(agent, n) for n in range(agents)], timeout=30, raise_error=True)
    assert proxy.lost == losses
    records = recorder.records
    assert len(records) == agents * calls_each
    assert all(r.outcome is Outcome.SUCCEEDED for r in records), [(r.outcome, r.failures) for r in records]
    assert sum(Failure.REDIS_WATCH_CONFLICT in r.failures for r in records) >= losses

    with redis.Redis.from_url(servers.redis_url) as direct:
        for team in range(1, teams + 1):
            version = int(direct.hget(keys("plan", team), "version") or 0)
            assert version == direct.scard(keys("plan", team, "steps")), f"team {team}"
        applied = direct.smismember(keys("plan", "all_steps"), [str(r.op_id) for r in records])
        assert all(applied) and direct.scard(keys("plan", "all_steps")) == len(records)

        acknowledged = acknowledged_from(records)
        checks = audit_agent_state(context_for(admin, schema, lambda tools: acknowledged, direct), teams=teams)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
