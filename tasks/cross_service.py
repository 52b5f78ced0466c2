"""The cross_service scenario: one operation across PostgreSQL and Redis.

`charge_usage` charges credits in PostgreSQL and must count the agent's usage in Redis (the
counters a rate limiter reads). Both cannot commit together, so the charge writes an outbox
row in its own transaction; the usage is applied to Redis from the outbox, idempotently (a
set of applied operation ids guards the increment), right after the commit by the agent, and
by the relay for anything an agent could not apply (a crash, a Redis error). Between the commit
and the apply the two services disagree: that window is measured, and the charges the relay
applied are counted and noted in the report (relay_healed), never healed silently.

The guard set would grow by one id a charge for the whole run, so the coordinator drains it
(`drain_usage_applied`): the ids go to PostgreSQL (usage_applied) and their outbox rows are
marked applied in one transaction, and only then leave the set. The relay applies only rows not
marked applied, so a drained id is never applied again by it; and the agent's own apply, the
only other one, is refused once the relay has applied its charge (see _APPLY).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from itertools import islice
from typing import Any

import psycopg
import redis
import redis.exceptions
from psycopg import sql

from db.audits import SHOW_AT_MOST, AuditContext, Check, identities_in_table, listing, listing_ids, rows_match_values
from db.redis_keys import RedisKeys
from db.tool import Transaction
from tasks.credits import MAX_AMOUNT, debit
from tasks.ledger import record_in_ledger

__all__ = ["charge_usage", "charge_usage_arguments", "relay_outbox", "drain_usage_applied", "audit_cross_service"]

log = logging.getLogger(__name__)

# KEYS: applied op ids, usage hash, the last charge the relay applied for the agent.
# ARGV: op id, agent, amount, 1 when the relay applies it (else 0). 1 if applied now, 0 if it
# already was.
# The relay may apply a charge before its agent's own apply reaches Redis, and the drain may
# then take the id out of the set: the agent's apply would find it absent. So the relay leaves
# the charge's id under the agent's name, and an agent's apply of that charge is refused. One key
# per agent is enough: an agent's apply is sent once, right after its commit, and settled before
# the agent's next call, so no older charge of the agent can still be applied by it.
_APPLY = """
if ARGV[4] == '0' and redis.call('GET', KEYS[3]) == ARGV[1] then
  return 0
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[3], ARGV[1])
  end
  return 1
end
return 0
"""


def _apply(client: redis.Redis, keys: RedisKeys, op_id: uuid.UUID, agent_id: str, amount: int, *,
           by_relay: bool) -> bool:
    return bool(client.eval(_APPLY, 3, keys("usage", "applied"), keys("usage"), keys("usage", "relayed", agent_id),
                            str(op_id), agent_id, amount, int(by_relay)))


def charge_usage_arguments(rng: random.Random, *, accounts: int) -> dict[str, int]:
    """The account charged, of the `accounts`, and the amount: the usage the agent is counted."""
    return {"account": rng.randint(1, accounts), "amount": rng.randint(1, MAX_AMOUNT)}


def charge_usage(tx: Transaction, *, account: int, amount: int, keys: RedisKeys) -> dict[str, Any]:
    """What it wrote in both tables: the ledger's debit and amount, and the agent the outbox row
    (and so Redis's usage) is charged to."""
    debit(tx, account, amount)
    charged = {**record_in_ledger(tx, "charge_usage", debit=account, credit=None, amount=amount), "agent": tx.agent_id}
    tx.execute("INSERT INTO usage_outbox (op_id, agent_id, amount) VALUES (%s, %s, %s)",
               (tx.op_id, tx.agent_id, amount))
    tx.work()
    op_id, agent_id, client = tx.op_id, tx.agent_id, tx.redis

    def apply_usage() -> None:
        try:
            _apply(client, keys, op_id, agent_id, amount, by_relay=False)
        except redis.exceptions.RedisError as exc:
            log.debug("usage of %s left to the relay: %s", op_id, exc)
            return
        # From COMMIT, when PostgreSQL holds the charge and Redis does not yet count it.
        tx.observe("cross_service_window", time.perf_counter() - tx.committed_at)

    tx.after_commit.append(apply_usage)
    return charged


def relay_outbox(conn: psycopg.Connection, schema: str, client: redis.Redis, keys: RedisKeys) -> dict[str, int]:
    """Apply every outbox row to Redis (idempotently) and mark it applied; what it did."""
    outbox = sql.Identifier(schema, "usage_outbox")
    caught_up = applied = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                sql.SQL("SELECT op_id, agent_id, amount FROM {} WHERE applied_at IS NULL"
                        " ORDER BY committed_at LIMIT 1000 FOR UPDATE SKIP LOCKED").format(outbox)
            ).fetchall()
            relayed = [op_id for op_id, agent_id, amount in rows
                       if _apply(client, keys, op_id, agent_id, amount, by_relay=True)]
            caught_up += len(relayed)
            if rows:
                conn.execute(sql.SQL("UPDATE {} SET applied_at = clock_timestamp(), relayed = op_id = ANY(%s)"
                                     " WHERE op_id = ANY(%s)").format(outbox), (relayed, [r[0] for r in rows]))
        applied += len(rows)
        if len(rows) < 1000:
            return {"marked": applied, "caught_up": caught_up}


_DRAIN_BATCH = 5_000


def _as_uuid(member: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(member.decode())
    except (ValueError, UnicodeDecodeError):
        return None


def drain_usage_applied(ctx: AuditContext) -> int:
    """Move the ids of applied charges from Redis's guard set into usage_applied; how many.

    Each batch: the ids into PostgreSQL and their outbox rows marked applied (so the relay never
    applies them), committed, then removed from the set. A drain cut short after its commit
    moves the same ids again, harmlessly. A member that is no operation id (written by something
    other than the scripts) stays in the set, where the audit finds it.
    """
    conn, key = ctx.conn, ctx.keys("usage", "applied")
    applied, outbox = sql.Identifier(ctx.schema, "usage_applied"), sql.Identifier(ctx.schema, "usage_outbox")
    members = ctx.redis.sscan_iter(key, count=1000)
    moved = 0
    while chunk := list(islice(members, _DRAIN_BATCH)):
        batch = [(member, op_id) for member in chunk if (op_id := _as_uuid(member)) is not None]
        if not batch:
            continue
        op_ids = [op_id for _, op_id in batch]
        with conn.transaction():
            conn.execute(sql.SQL("INSERT INTO {} (op_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING"
                                 ).format(applied), (op_ids,))
            # The relay's own marks (and its windows) are kept: only the rows still unmarked.
            conn.execute(sql.SQL("UPDATE {} SET applied_at = clock_timestamp() WHERE op_id = ANY(%s)"
                                 " AND applied_at IS NULL").format(outbox), (op_ids,))
        ctx.redis.srem(key, *(member for member, _ in batch))
        moved += len(batch)
    return moved


def audit_cross_service(ctx: AuditContext) -> list[Check]:
    """Each charge whole in PostgreSQL (its ledger row and its outbox row, or neither, alike, as
    its call wrote them); Redis's usage counters against both, per agent; and the charges Redis
    applied (drained into usage_applied, and whatever the set still holds) against the outbox, by
    operation id. Charges the relay applied for their agent are counted and noted."""
    caught_up = relay_outbox(ctx.conn, ctx.schema, ctx.redis, ctx.keys)["caught_up"]
    drain_usage_applied(ctx)
    # After the drain: members that are no operation id (the drain leaves them), few.
    left = list(ctx.redis.sscan_iter(ctx.keys("usage", "applied"), count=1000))
    counted = {agent.decode(): int(total) for agent, total in ctx.redis.hgetall(ctx.keys("usage")).items()}
    conn = ctx.conn
    with ctx.in_schema(one_snapshot=True):
        charged = {agent: (int(ledger), int(outbox)) for agent, ledger, outbox in conn.execute(
            """SELECT agent_id, coalesce(l.total, 0), coalesce(o.total, 0)
               FROM (SELECT agent_id, sum(amount) AS total FROM ledger WHERE tool = 'charge_usage'
                     GROUP BY agent_id) l
               FULL JOIN (SELECT agent_id, sum(amount) AS total FROM usage_outbox GROUP BY agent_id) o
               USING (agent_id)"""
        ).fetchall()}
        # The charges no agent applied, by the sampler's relay during the run or the one above:
        # their window lasted until the relay applied them (from the row's insertion, a little
        # before COMMIT: never shorter than the real one).
        relay_windows = conn.execute(
            "SELECT extract(epoch FROM applied_at - committed_at)::float8 FROM usage_outbox WHERE relayed"
        ).fetchall()
        by_identity = _usage_applied_by_identity(conn, left)
        in_outbox = identities_in_table(conn, "usage_outbox", ctx.acknowledged_of(["charge_usage"]),
                                        present="charges_in_outbox", within="outbox_within_acknowledged",
                                        failed="failed_not_in_outbox")
        as_written = rows_match_values(conn, "usage_outbox", {"amount": "amount", "agent_id": "agent"},
                                       name="outbox_rows_match_calls")
        atomic = _charges_atomic(conn)
    # Last, so that an audit cut short by a lost connection and run again adds them once.
    for (window_s,) in relay_windows:
        ctx.observe("cross_service_window", window_s)
    healed = (f"the relay applied {len(relay_windows)} charges their agents had not ({caught_up} at the audit,"
              f" {len(relay_windows) - caught_up} during the run)" if relay_windows else "the relay applied none")
    if relay_windows:
        ctx.note("relay_healed", f"{healed}: without it Redis would count less usage than PostgreSQL charged")
    mismatched = sorted(
        (agent, *charged.get(agent, (0, 0)), counted.get(agent, 0))
        for agent in set(charged) | set(counted)
        if len({*charged.get(agent, (0, 0)), counted.get(agent, 0)}) > 1
    )
    agreement = listing("agent {}: the ledger charged {}, the outbox {}, Redis counted {}", mismatched) or \
        f"the ledger's charges = the outbox's = Redis's usage counters for all {len(charged)} agents"
    return [
        Check("usage_agrees_per_agent", not mismatched, 0, len(mismatched), f"{agreement} ({healed})",
              anomaly="cross_service_mismatches", anomaly_count=len(mismatched)),
        by_identity,
        *in_outbox,
        as_written,
        atomic,
    ]


def _charges_atomic(conn: psycopg.Connection) -> Check:
    """A charge writes its ledger row and its outbox row in one transaction: both or neither (for
    an indeterminate call too, which the identity checks let be either), alike."""
    only_ledger_ids, only_ledger, only_outbox_ids, only_outbox, unlike_ids, unlike, whole = conn.execute(
        """SELECT (array_agg(op_id) FILTER (WHERE o.op_id IS NULL))[1:%(n)s], count(*) FILTER (WHERE o.op_id IS NULL),
                  (array_agg(op_id) FILTER (WHERE l.op_id IS NULL))[1:%(n)s], count(*) FILTER (WHERE l.op_id IS NULL),
                  (array_agg(op_id) FILTER (WHERE l.amount <> o.amount OR l.agent_id <> o.agent_id))[1:%(n)s],
                  count(*) FILTER (WHERE l.amount <> o.amount OR l.agent_id <> o.agent_id),
                  count(*) FILTER (WHERE l.op_id IS NOT NULL AND o.op_id IS NOT NULL)
           FROM (SELECT op_id, amount, agent_id FROM ledger WHERE tool = 'charge_usage') l
           FULL JOIN usage_outbox o USING (op_id)""",
        {"n": SHOW_AT_MOST},
    ).fetchone()
    torn = only_ledger + only_outbox + unlike
    return Check("charges_atomic", not torn, 0, torn, "; ".join(filter(None, (
        only_ledger and f"in the ledger, not in the outbox: {listing_ids(only_ledger_ids, only_ledger)}",
        only_outbox and f"in the outbox, not in the ledger: {listing_ids(only_outbox_ids, only_outbox)}",
        unlike and f"amount or agent differ between ledger and outbox: {listing_ids(unlike_ids, unlike)}",
    ))) or f"each of the {whole} charges is in both the ledger and the outbox, with the same amount and agent")


def _usage_applied_by_identity(conn: psycopg.Connection, left: list[bytes]) -> Check:
    """The outbox's op ids against those Redis applied: drained, or still in the set (`left`)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS usage_left (op_id uuid) ON COMMIT DROP")
    left_ids = [op_id for member in left if (op_id := _as_uuid(member)) is not None]
    no_ids = [member.decode(errors="replace") for member in left if _as_uuid(member) is None]
    conn.execute("INSERT INTO usage_left SELECT unnest(%s::uuid[])", (left_ids,))
    never_ids, never, extra_ids, extra, charges = conn.execute(
        """WITH applied AS (SELECT op_id FROM usage_applied UNION SELECT op_id FROM usage_left)
           SELECT (array_agg(o.op_id) FILTER (WHERE a.op_id IS NULL))[1:%(n)s], count(*) FILTER (WHERE a.op_id IS NULL),
                  (array_agg(a.op_id) FILTER (WHERE o.op_id IS NULL))[1:%(n)s], count(*) FILTER (WHERE o.op_id IS NULL),
                  count(o.op_id)
           FROM usage_outbox o FULL JOIN applied a USING (op_id)""",
        {"n": SHOW_AT_MOST},
    ).fetchone()
    not_charged = [*map(str, extra_ids or []), *no_ids]
    extra += len(no_ids)
    return Check("usage_applied_by_identity", not (never or extra), charges, charges - never,
                 "; ".join(filter(None, (
                     never and f"charged but never applied to Redis: {listing_ids(never_ids or [], never)}",
                     extra and f"applied to Redis but charged nowhere: {listing_ids(not_charged, extra)}",
                 ))) or "the charges Redis applied are exactly the outbox's, by operation id")
