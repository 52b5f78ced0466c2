"""The agent_state scenario: agents of a team share a plan in Redis and change it with
optimistic concurrency (WATCH/MULTI/EXEC, retried on WatchError).

Every change is appended to the plans' log (a Redis stream) in the same MULTI; the coordinator
drains the log into PostgreSQL (plan_log) during the run, so Redis keeps the plans, one
idempotence key per agent and the log's last few entries, however long the run.
"""

from __future__ import annotations

import uuid

from psycopg import sql

from db.audits import AuditContext, Check, identities_in_table
from db.redis_drain import drain_stream
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["update_plan", "drain_plan_log", "audit_agent_state"]


def update_plan(tx: Transaction, *, keys: RedisKeys, teams: int) -> None:
    """Add the call's step to its team's plan and bump the plan's version, once per call.

    redis-py also raises WatchError when the connection drops while watching, EXEC included:
    the attempt it ended may have been applied, and the adapter retries it (same op_id, same
    team). So each attempt first looks, under the WATCH, at the last step its agent applied: an
    agent makes one call at a time and retries only within it, so one key per agent guards
    every retry that can still come. An earlier attempt's EXEC that reaches the server after
    this check changes the plan and aborts this attempt, whose retry then finds the step.
    """
    team = tx.rng.randint(1, teams)
    plan, applied_by = keys("plan", team), keys("plan", "applied_by", tx.agent_id)
    step = str(tx.op_id)
    with tx.redis.pipeline() as pipe:
        pipe.watch(plan)
        if pipe.get(applied_by) == step.encode():
            return  # applied by an earlier attempt whose reply was lost
        version = int(pipe.hget(plan, "version") or 0)
        tx.work()  # the agent decides its change while others may change the plan
        pipe.multi()
        pipe.hset(plan, mapping={"version": version + 1, "last_step": step})
        pipe.set(applied_by, step)
        pipe.xadd(keys("plan", "log"), {"step": step, "team": team})
        pipe.execute()  # WatchError if the plan changed since WATCH (or the connection dropped): retried


def _plan_log_row(fields: dict[bytes, bytes]) -> tuple[uuid.UUID | None, int | None]:
    """(step, team); (None, None) for an entry update_plan did not write."""
    try:
        return uuid.UUID(fields[b"step"].decode()), int(fields[b"team"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None, None


def drain_plan_log(ctx: AuditContext) -> int:
    """Move the plans' log from Redis into plan_log; how many changes were moved."""
    return drain_stream(ctx.conn, ctx.schema, ctx.redis, ctx.keys("plan", "log"), "plan_log", ("op_id", "team"),
                        _plan_log_row)


def audit_agent_state(ctx: AuditContext, *, teams: int) -> list[Check]:
    """Every change by identity in plan_log (drained to the end first), and each plan's version
    against the number of its changes there."""
    drain_plan_log(ctx)
    conn = ctx.conn
    versions = {team: int(ctx.redis.hget(ctx.keys("plan", team), "version") or 0) for team in range(1, teams + 1)}
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(ctx.schema)))
        changes = dict(conn.execute("SELECT team, count(*) FROM plan_log WHERE team IS NOT NULL GROUP BY team"))
        present, within, failed = identities_in_table(
            conn, "plan_log", ctx.acknowledged_of(["update_plan"]), present="plan_steps_not_lost",
            within="plan_steps_within_acknowledged", failed="failed_not_in_plans", lost_anomaly="lost_updates")
    wrong_versions = sorted((team, versions.get(team, 0), changes.get(team, 0)) for team in set(versions) | set(changes)
                            if versions.get(team, 0) != changes.get(team, 0))
    return [
        present,
        Check("plan_version_counts_changes", not wrong_versions, 0, len(wrong_versions),
              "; ".join(f"team {t} at version {v} after {a} changes" for t, v, a in wrong_versions[:5])
              or "each team's version = the number of changes applied to its plan"),
        within,
        failed,
    ]
