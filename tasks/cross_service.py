"""The cross_service scenario: one operation across PostgreSQL and Redis.

`charge_usage` charges credits in PostgreSQL and must count the agent's usage in Redis (the
counters a rate limiter reads). Both cannot commit together, so the charge writes an outbox
row in its own transaction; the usage is applied to Redis from the outbox, idempotently (a
set of applied operation ids guards the increment), right after the commit by the agent, and
by the relay for anything an agent could not apply (a crash, a Redis error). Between the commit
and the apply the two services disagree: that window is measured, and the relay's catch-ups
are counted.
"""

from __future__ import annotations

import logging
import time
import uuid

import psycopg
import redis
import redis.exceptions
from psycopg import sql

from db.audits import AuditContext, Check, identities_in_table, listing_ids
from db.redis_keys import RedisKeys
from db.tool import Transaction
from tasks.credits import MAX_AMOUNT, debit
from tasks.ledger import record_in_ledger

__all__ = ["charge_usage", "relay_outbox", "audit_cross_service"]

log = logging.getLogger(__name__)

# KEYS: applied op ids, usage hash. ARGV: op id, agent, amount. 1 if applied now, 0 if it already was.
_APPLY = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def _apply(client: redis.Redis, keys: RedisKeys, op_id: uuid.UUID, agent_id: str, amount: int) -> bool:
    return bool(client.eval(_APPLY, 2, keys("usage", "applied"), keys("usage"), str(op_id), agent_id, amount))


def charge_usage(tx: Transaction, *, accounts: int, keys: RedisKeys) -> None:
    account = tx.rng.randint(1, accounts)
    amount = tx.rng.randint(1, MAX_AMOUNT)
    debit(tx, account, amount)
    record_in_ledger(tx, "charge_usage", debit=account, credit=None, amount=amount)
    tx.execute("INSERT INTO usage_outbox (op_id, agent_id, amount) VALUES (%s, %s, %s)",
               (tx.op_id, tx.agent_id, amount))
    tx.work()
    op_id, agent_id, client = tx.op_id, tx.agent_id, tx.redis

    def apply_usage() -> None:
        try:
            _apply(client, keys, op_id, agent_id, amount)
        except redis.exceptions.RedisError as exc:
            log.debug("usage of %s left to the relay: %s", op_id, exc)
            return
        # From COMMIT, when PostgreSQL holds the charge and Redis does not yet count it.
        tx.observe("cross_service_window", time.perf_counter() - tx.committed_at)

    tx.after_commit.append(apply_usage)


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
            relayed = [op_id for op_id, agent_id, amount in rows if _apply(client, keys, op_id, agent_id, amount)]
            caught_up += len(relayed)
            if rows:
                conn.execute(sql.SQL("UPDATE {} SET applied_at = clock_timestamp(), relayed = op_id = ANY(%s)"
                                     " WHERE op_id = ANY(%s)").format(outbox), (relayed, [r[0] for r in rows]))
        applied += len(rows)
        if len(rows) < 1000:
            return {"marked": applied, "caught_up": caught_up}


def audit_cross_service(ctx: AuditContext) -> list[Check]:
    relayed = relay_outbox(ctx.conn, ctx.schema, ctx.redis, ctx.keys)
    conn = ctx.conn
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(ctx.schema)))
        charged = dict(conn.execute("SELECT agent_id, sum(amount) FROM usage_outbox GROUP BY agent_id").fetchall())
        outbox_ids = {row[0] for row in conn.execute("SELECT op_id::text FROM usage_outbox")}
        # The charges no agent could apply: their window lasted until the relay applied them
        # (from the row's insertion, a little before COMMIT: never shorter than the real one).
        relay_windows = conn.execute(
            "SELECT extract(epoch FROM applied_at - committed_at)::float8 FROM usage_outbox WHERE relayed"
        ).fetchall()
        in_outbox = identities_in_table(conn, "usage_outbox", ctx.acknowledged_of(["charge_usage"]),
                                        present="charges_in_outbox", within="outbox_within_acknowledged",
                                        failed="failed_not_in_outbox")
    counted = {agent.decode(): int(total) for agent, total in ctx.redis.hgetall(ctx.keys("usage")).items()}
    applied_ids = {raw.decode() for raw in ctx.redis.sscan_iter(ctx.keys("usage", "applied"), count=1000)}
    never_applied, not_charged = outbox_ids - applied_ids, applied_ids - outbox_ids
    # Last, so that an audit cut short by a lost connection and run again adds them once.
    for (window_s,) in relay_windows:
        ctx.observe("cross_service_window", window_s)
    mismatched = sorted(
        (agent, int(charged.get(agent, 0)), counted.get(agent, 0))
        for agent in set(charged) | set(counted)
        if int(charged.get(agent, 0)) != counted.get(agent, 0)
    )
    return [
        Check("usage_agrees_per_agent", not mismatched, 0, len(mismatched),
              "; ".join(f"agent {a}: PostgreSQL charged {p}, Redis counted {r}" for a, p, r in mismatched[:5])
              or f"PostgreSQL's charges = Redis's usage counters for all {len(charged)} agents"
                 f" (the relay caught up {relayed['caught_up']} at the end)",
              anomaly="cross_service_mismatches", anomaly_count=len(mismatched)),
        Check("usage_applied_by_identity", not (never_applied or not_charged), len(outbox_ids),
              len(outbox_ids) - len(never_applied),
              "; ".join(filter(None, (
                  never_applied and f"charged but never applied to Redis: {listing_ids(never_applied)}",
                  not_charged and f"applied to Redis but charged nowhere: {listing_ids(not_charged)}",
              ))) or "the charges Redis applied are exactly the outbox's, by operation id"),
        *in_outbox,
    ]

