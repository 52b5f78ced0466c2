"""The adapter of the MCP transport: each tool call one `tools/call` to the server (or more, by
the rules below), reported once through the same hooks as the in-process adapter's
(transport.in_process), so the harness tells Locust of each call once, whichever transport ran it.

Before the first try, the call's arguments are drawn from its seed, once (db.tool), and its op id
made; every request of the call carries both (transport.mcp.client: `_meta`, `Idempotency-Key`,
the `op_id` argument). Each try sends the call and reads what came back as a careful client:
- a tool result: `isError: false` succeeded; `isError: true` is the failure of the kind it names
  (transport.mcp.tool_result), tried again by the retry policy only when that kind may be retried
  and the work was rolled back; a refusal or an error ends the call;
- a JSON-RPC error (an unknown tool, invalid arguments) or an HTTP error status: an error;
- no reply, and the request provably never reached the server (the connection could not be
  opened, nor its session): a lost connection, nothing applied, tried again by the policy; for
  `connect_timeout_s` from the first such try, without using up the policy's tries: a server
  not listening may be restarting (--chaos mcp-kill), and a call whose reply was lost is settled
  only by an answer (its job resumed, its op id found applied, or its work done);
- no reply to a request that was sent (the connection broke, the stream ended, a 5xx): the
  server may have applied it. Sent again with the same op id while the policy allows, counted in
  `reissues` (a server that keys its work by op id applies it once); no reply within the
  timeout is not sent again (the request may still be running).
Once a reply was lost, the call can only end succeeded (a later reply said so) or indeterminate.
A call sent again whose answer is a unique violation (SQLSTATE 23505) met the key on its op id
(docs/mcp.md, the recipe): an earlier send was applied. That is no error, and the end of the
call: indeterminate, since what the earlier send returned never came.

A tool of backend "mcp" (a user's, db.tool) is not called by its name: each try runs its function
here, in the agent's process, with no PostgreSQL transaction, and the function calls the server's
tools itself through `tx.mcp` (transport.mcp.tool_calls), under the call's op id, read by the same
rules. What the function raises of its own is classified as in process (db.errors.classify: a
`Refused`, a `VersionConflict` retried, anything else an error); what it returns is the call's value.

`attempts` and `failures` are the client's tries; what the server said of its own tries is
`server_attempts` and `server_failures` (transport.call_record).
"""

from __future__ import annotations

import logging
import random
import uuid
from time import monotonic_ns, perf_counter
from typing import Any

import gevent

from db.errors import Failure, classify
from db.tool import Arguments, Tool, Transaction
from transport.call_record import CallRecord, Outcome, draw_arguments, lane_of
from transport.hooks import CallHook
from transport.in_flight import CallsInFlight
from transport.mcp.client import McpClient, McpSession, UnusableTool
from transport.mcp.exchange import McpError, NotDelivered, ReplyLost, ReplyTimedOut
from transport.mcp.tool_calls import McpCalls, McpToolFailed
from transport.retry import RetryPolicy

__all__ = ["McpToolAdapter"]

log = logging.getLogger(__name__)

_STOPPED = (gevent.GreenletExit, KeyboardInterrupt, SystemExit)
_UNIQUE_VIOLATION = "23505"


class McpToolAdapter:
    """Calls tools on the server `client` is connected to, one session per agent. `reissue_lost`:
    whether a request whose reply was lost is sent again (by the retry policy)."""

    def __init__(self, client: McpClient, policy: RetryPolicy, call_finished: CallHook,
                 call_started: CallHook | None = None, *, reissue_lost: bool = True) -> None:
        self._client = client
        self._policy = policy
        self._call_started = call_started
        self._reissue_lost = reissue_lost
        # A server refusing connections is not listening, for now (restarting): tries it never got
        # use none of the policy's for as long as a connection may take to open.
        self._refused_for_s = client.settings.connect_timeout_s
        self._backoff_rng = random.Random()
        self._in_flight = CallsInFlight(call_finished)
        self._sessions: dict[str, McpSession] = {}

    @property
    def calls_in_flight(self) -> int:
        return len(self._in_flight)

    def abandon_calls_in_flight(self) -> list[CallRecord]:
        """Report every call still in flight as indeterminate, now, and ignore its own end."""
        return self._in_flight.abandon()

    def open_session(self, agent_id: str) -> None:
        """Open the agent's session now (its first call would), so that no call's time holds the
        handshake. A failure is the first call's to meet."""
        try:
            self._session(agent_id).open()
        except Exception as exc:  # what it was is told by the call that meets it again
            log.debug("MCP session of agent %s not opened: %s", agent_id, exc)

    def close_session(self, agent_id: str) -> None:
        session = self._sessions.pop(agent_id, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for agent_id in list(self._sessions):
            self.close_session(agent_id)

    def call(self, tool: Tool, agent_id: str, seed: int, *, arguments: Arguments | None = None, turn: int = 0,
             slot: int = 0) -> CallRecord:
        """As the in-process adapter's `call`: `arguments`, when given, were drawn by its agent."""
        record = CallRecord(tool=tool.name, backend=tool.backend, op_id=uuid.uuid4(), agent_id=agent_id, seed=seed,
                            arguments=arguments, started_ns=monotonic_ns(), turn=turn, slot=slot,
                            lane=lane_of(agent_id, slot))
        drawn = arguments is not None or draw_arguments(tool, seed, record, to_send=not tool.calls_mcp)
        if self._call_started is not None:
            self._call_started.fire(record=record)
        started = perf_counter()
        self._in_flight.started(record)
        lost = False  # a request of this call reached the server, maybe, and its reply never came
        sending = reissuing = False
        tries = 0  # of the policy's: a try the server never got uses none while it keeps refusing
        refused_since: float | None = None
        try:
            while drawn and tries < self._policy.max_tries:
                record.attempts += 1
                record.reissues += reissuing
                session = self._session(agent_id)
                renewals = session.renewals
                sending = True
                try:
                    again = self._attempt(tool, session, record, lost)
                    reissuing, refused_since = False, None
                except NotDelivered as exc:
                    self._failed(record, Failure.CONNECTION_LOST, exc)
                    again, reissuing = True, False
                    refused_since = perf_counter() if refused_since is None else refused_since
                except ReplyLost as exc:
                    lost, refused_since = True, None
                    self._failed(record, Failure.CONNECTION_LOST, exc)
                    again = reissuing = self._reissue_lost and not isinstance(exc, ReplyTimedOut)
                finally:
                    record.reissues += session.renewals - renewals
                sending = False
                tries += refused_since is None or perf_counter() - refused_since >= self._refused_for_s
                if not again or tries >= self._policy.max_tries:
                    break
                gevent.sleep(self._policy.backoff(record.attempts, self._backoff_rng))
        except _STOPPED:
            record.outcome = Outcome.INDETERMINATE if sending or lost else Outcome.INTERRUPTED
            record.cut_off = sending and not lost  # a reply the platform lost first: its unknown
            raise
        else:
            if record.outcome is not Outcome.SUCCEEDED:
                record.outcome = Outcome.INDETERMINATE if lost else Outcome.FAILED
        finally:
            record.duration_s = perf_counter() - started
            self._in_flight.finished(record)
        return record

    def _attempt(self, tool: Tool, session: McpSession, record: CallRecord, lost: bool) -> bool:
        """One try; whether the call may be tried again. NotDelivered when the request never
        reached the server, ReplyLost when its reply never came. `lost`: an earlier try's reply
        was."""
        calls = McpCalls(session, record)
        began = perf_counter()
        tx: Transaction | None = None

        def ended(failure: Failure | None) -> None:  # the attempt's time, once it reached the server
            record.operations.append(("mcp", perf_counter() - began, "", failure.value if failure else ""))

        try:
            if tool.calls_mcp:
                # A tool that declares its arguments executes from them alone (db.tool).
                tx = Transaction(record.op_id, record.agent_id, record.seed if record.arguments is None else None,
                                 None, None, mcp=calls, lane=record.lane)
                value = tool.run(tx, **(record.arguments or {}))
                follow_ups, record.observations = tx.after_commit, tx.observations
            else:
                value, follow_ups = calls.call(tool.name, record.arguments or {}).value, []
        except NotDelivered:
            raise
        except ReplyLost:
            ended(Failure.CONNECTION_LOST)
            raise
        except (McpError, UnusableTool) as exc:
            ended(Failure.ERROR)
            self._failed(record, Failure.ERROR, exc)
            return False
        except McpToolFailed as exc:
            ended(exc.failure)
            if lost and exc.result.sqlstate == _UNIQUE_VIOLATION:  # its op id is there: applied by an earlier send
                return False
            # What the attempt set out to do: the tool function's own, or what the server said its tool's was.
            self._failed(record, exc.failure, exc, exc.result.attempted if tx is None else tx.attempted)
            return exc.failure.retryable and exc.rolled_back
        except Exception as exc:  # a tool function's own: its refusal, its conflict, or a bug (an error)
            failure = classify(exc)
            ended(failure)
            self._failed(record, failure, exc, None if tx is None else tx.attempted)
            return failure.retryable
        ended(None)
        record.outcome = Outcome.SUCCEEDED
        record.value = value
        for follow_up in follow_ups:  # as in process: the call has succeeded already
            follow_up()
        return False

    def _failed(self, record: CallRecord, failure: Failure, exc: BaseException, attempted: Any = None) -> None:
        """A failed try; `attempted`, what it set out to do when it said, becomes the call's value
        (transport.call_record)."""
        record.failures.append(failure)
        record.exception = exc
        if attempted is not None:
            record.value = attempted
        if failure is Failure.ERROR:
            log.warning("tool %s failed over MCP: %s: %s", record.tool, type(exc).__name__, exc)

    def _session(self, agent_id: str) -> McpSession:
        session = self._sessions.get(agent_id)
        if session is None:
            session = self._sessions[agent_id] = self._client.session()
        return session
