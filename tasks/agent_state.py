"""The agent_state scenario: agents of a team share a plan in Redis and change it with
optimistic concurrency (WATCH/MULTI/EXEC, retried on WatchError)."""

from __future__ import annotations

from db.audits import AuditContext, Check, listing_ids
from db.redis_keys import RedisKeys
from db.tool import Transaction

__all__ = ["update_plan", "audit_agent_state"]


def update_plan(tx: Transaction, *, keys: RedisKeys, teams: int) -> None:
    """Add the call's step to its team's plan and bump the plan's version, once per call.

    redis-py also raises WatchError when the connection drops while watching, EXEC included:
    the attempt it ended may have been applied, and the adapter retries it (same op_id, same
    team). So each attempt first looks for its step, under the WATCH: an earlier attempt's
    EXEC that reaches the server after this check changes the plan and aborts this attempt,
    whose retry then finds the step.
    """
    team = tx.rng.randint(1, teams)
    plan, steps, all_steps = keys("plan", team), keys("plan", team, "steps"), keys("plan", "all_steps")
    step = str(tx.op_id)
    with tx.redis.pipeline() as pipe:
        pipe.watch(plan)
        if pipe.sismember(steps, step):
            return  # applied by an earlier attempt whose reply was lost
        version = int(pipe.hget(plan, "version") or 0)
        tx.work()  # the agent decides its change while others may change the plan
        pipe.multi()
        pipe.hset(plan, mapping={"version": version + 1, "last_step": step})
        pipe.sadd(steps, step)
        pipe.sadd(all_steps, step)
        pipe.execute()  # WatchError if the plan changed since WATCH (or the connection dropped): retried


def audit_agent_state(ctx: AuditContext, *, teams: int) -> list[Check]:
    r, keys = ctx.redis, ctx.keys
    wrong_versions = []
    for team in range(1, teams + 1):
        version = int(r.hget(keys("plan", team), "version") or 0)
        applied = r.scard(keys("plan", team, "steps"))
        if version != applied:
            wrong_versions.append((team, version, applied))
    acknowledged = ctx.acknowledged_of(["update_plan"])
    stored = {raw.decode() for raw in r.sscan_iter(keys("plan", "all_steps"), count=1000)}
    succeeded = {str(op) for op in acknowledged.succeeded}
    failed = {str(op) for op in acknowledged.failed}
    missing = succeeded - stored
    applied_failed = failed & stored
    unknown = stored - succeeded - {str(op) for op in acknowledged.indeterminate} - failed
    return [
        Check("plan_steps_not_lost", not missing, len(succeeded), len(succeeded) - len(missing),
              f"lost: {listing_ids(missing)}" if missing else "every succeeded change is in its team's plan",
              anomaly="lost_updates", anomaly_count=len(missing)),
        Check("plan_version_counts_changes", not wrong_versions, 0, len(wrong_versions),
              "; ".join(f"team {t} at version {v} after {a} changes" for t, v, a in wrong_versions[:5])
              or "each team's version = the number of changes applied to its plan"),
        Check("plan_steps_within_acknowledged", not unknown, 0, len(unknown),
              f"steps of no call the harness made: {listing_ids(unknown)}" if unknown
              else "every step belongs to a succeeded or an indeterminate call"),
        Check("failed_not_in_plans", not applied_failed, 0, len(applied_failed),
              f"applied although reported failed: {listing_ids(applied_failed)}" if applied_failed
              else f"none of the {len(failed)} calls reported failed is in a plan",
              anomaly="failed_but_applied", anomaly_count=len(applied_failed)),
    ]
